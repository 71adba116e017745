"""A vocabulary as a trie of code points, and the token masks of a grammar over it.

`VocabTrie` (one per tokenizer, cached): every token's bytes decoded as llama.cpp decodes them
(code points, and the partial character a token may end with), the code point sequences
merged into a trie whose nodes are numbered level by level (breadth first), so that one level
is one contiguous slice of the node arrays:

    parent   int32 (n_nodes,)   the node one code point shorter (the root is node 0)
    cp       int32 (n_nodes,)   the code point that leads here from the parent
    levels   list               nodes of depth d are levels[d] .. levels[d+1]-1
    tok_id   int32 (n_tok,)     the tokens a grammar may allow (not control, not empty, valid)
    tok_node int32 (n_tok,)     the node where a token's whole code points end
    tok_pid  int32 (n_tok,)     the token's trailing partial character (index in partials), or -1
    vocab_node int32 (n_vocab,) tok_node by token id; n_nodes (a node that is always dead) for
                                the tokens a grammar never allows

`Masker` (one per grammar and tokenizer, cached): the allowed-token mask of a grammar state,
computed by walking the trie level by level with numpy: every node's config is the parent's
config moved over the node's code point class, one table read per node (the Matcher's table,
filled on demand for the pairs not seen yet). Shared prefixes are walked once; a level where
every config is dead ends the walk. Masks are cached per state, packed to bits.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np

from .matcher import DEAD, NO_PARTIAL, Matcher, decode_utf8

SCALAR_LEVEL = 64         # trie levels thinner than this are walked node by node
MASK_CACHE = 1024          # masks kept per grammar and tokenizer (n_vocab/8 bytes each: 6 KB for 49k)


class VocabTrie:
    def __init__(self, tokenizer) -> None:
        self.n_vocab = tokenizer.n_vocab
        self.eog = np.array(sorted(tokenizer.eog_ids), dtype=np.int64)
        self.pieces: list[bytes] = [tokenizer.token_to_piece(i, False) for i in range(self.n_vocab)]
        eog = set(tokenizer.eog_ids)
        self.partials: list[tuple[int, int]] = []
        partial_ids: dict[tuple[int, int], int] = {}
        nodes: dict[tuple[int, int], int] = {}           # (parent, cp) -> node
        parent, cps_of, depth = [0], [0], [0]
        tok_id, tok_node, tok_pid, cont = [], [], [], []
        for i, piece in enumerate(self.pieces):
            if i in eog or not piece or 0 in piece:
                continue                                  # control tokens have empty pieces
            if piece[0] >> 6 == 2:
                cont.append(i)                            # may continue a partial character
            decoded = decode_utf8(piece)
            if decoded is None or 0 in decoded[0]:
                continue
            cps, partial = decoded
            node = 0
            for cp in cps:
                child = nodes.get((node, cp))
                if child is None:
                    child = nodes[(node, cp)] = len(parent)
                    parent.append(node)
                    cps_of.append(cp)
                    depth.append(depth[node] + 1)
                node = child
            pid = -1
            if partial != NO_PARTIAL:
                pid = partial_ids.setdefault(partial, len(self.partials))
                if pid == len(self.partials):
                    self.partials.append(partial)
            tok_id.append(i)
            tok_node.append(node)
            tok_pid.append(pid)
        self._number_by_level(np.array(parent), np.array(cps_of), np.array(depth), np.array(tok_node))
        self._partial_ranges()
        self.tok_id = np.array(tok_id, dtype=np.int64)
        self.tok_pid = np.array(tok_pid, dtype=np.int32)
        self.vocab_node = np.full(self.n_vocab, self.n_nodes, dtype=np.int32)
        self.vocab_node[self.tok_id] = self.tok_node
        self.partial_tok = np.flatnonzero(self.tok_pid >= 0)      # indexes into tok_*
        self.cont_tokens = cont
        self.maskers: OrderedDict[int, Masker] = OrderedDict()   # id(matcher) -> masker
        self.lock = threading.Lock()

    def _partial_ranges(self) -> None:
        """Per partial character: the code points it may become (CharSet.partial_fits)."""
        low, high, valid = [], [], []
        for value, due in self.partials:
            lo = value << (6 * due)
            hi = lo | ((1 << (6 * due)) - 1)
            if lo == 0:
                lo = {2: 1 << 11, 3: 1 << 16}.get(due, 0)
            low.append(lo)
            high.append(hi)
            valid.append(not (due == 1 and value < 2))
        self.partial_low = np.array(low, dtype=np.int64)
        self.partial_high = np.array(high, dtype=np.int64)
        self.partial_valid = np.array(valid, dtype=bool)

    def _number_by_level(self, parent, cps, depth, tok_node) -> None:
        order = np.argsort(depth, kind="stable")
        new_id = np.empty_like(order)
        new_id[order] = np.arange(len(order))
        self.parent = new_id[parent[order]].astype(np.int32)
        self.cp = cps[order].astype(np.int32)
        d = depth[order]
        self.levels = list(np.searchsorted(d, np.arange(d[-1] + 2)))
        self.tok_node = new_id[tok_node].astype(np.int32)
        self.parent_list = self.parent.tolist()
        self.n_nodes = len(order)


_TRIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRIES_LOCK = threading.Lock()


def vocab_trie(tokenizer) -> VocabTrie:
    """The tokenizer's trie, built once (about a second for 50k tokens) and kept with it."""
    with _TRIES_LOCK:
        trie = _TRIES.get(tokenizer)
        if trie is None:
            trie = _TRIES[tokenizer] = VocabTrie(tokenizer)
        return trie


def masker(matcher: Matcher, tokenizer, keep: int = 16) -> Masker:
    """The masker of a grammar over a tokenizer's vocabulary (the last `keep` grammars kept)."""
    trie = vocab_trie(tokenizer)
    with trie.lock:
        m = trie.maskers.get(id(matcher))
        if m is None or m.matcher is not matcher:
            m = trie.maskers[id(matcher)] = Masker(matcher, trie)
            while len(trie.maskers) > keep:
                trie.maskers.popitem(last=False)
        trie.maskers.move_to_end(id(matcher))
        return m


class Masker:
    def __init__(self, matcher: Matcher, trie: VocabTrie) -> None:
        self.matcher, self.trie = matcher, trie
        self.node_cls = np.searchsorted(np.array(matcher.bounds, dtype=np.int64), trie.cp,
                                        side="right").astype(np.int32)
        self.node_cls_list = self.node_cls.tolist()
        self.cache: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()
        self.partial_rows: dict[int, np.ndarray] = {}
        self.partial_cols: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def allowed(self, cid: int, partial: tuple[int, int] = NO_PARTIAL) -> np.ndarray:
        """bool (n_vocab,): the tokens the grammar state (config, partial) allows; EOG tokens
        only where the grammar has matched and no character is half written."""
        key = (cid, partial)
        with self.lock:
            packed = self.cache.get(key)
            if packed is not None:
                self.cache.move_to_end(key)
                return np.unpackbits(packed, count=self.trie.n_vocab).view(bool)
        ok = self._walk(cid) if partial == NO_PARTIAL else self._continue_partial(cid, partial)
        if partial == NO_PARTIAL and self.matcher.accepts(cid):
            ok[self.trie.eog] = True
        with self.lock:
            self.cache[key] = np.packbits(ok)
            while len(self.cache) > MASK_CACHE:
                self.cache.popitem(last=False)
        return ok

    def _walk(self, cid: int) -> np.ndarray:
        trie, m = self.trie, self.matcher
        state = np.zeros(trie.n_nodes + 1, dtype=np.int32)
        state[0] = cid
        nc = m.n_classes
        for d in range(1, len(trie.levels) - 1):
            a, b = trie.levels[d], trie.levels[d + 1]
            if b - a < SCALAR_LEVEL:        # the deep, thin levels: cheaper one node at a time
                self._walk_scalar(state, a, trie.levels[d - 1])
                break
            s = state[trie.parent[a:b]]
            flat = s * nc + self.node_cls[a:b]
            r = m.trans.ravel()[flat]
            if r.min() < 0:
                for pair in set(flat[r < 0].tolist()):
                    m.step(pair // nc, pair % nc)
                r = m.trans.ravel()[flat]
            state[a:b] = r
            if r.max() == DEAD:
                break
        ok = state[trie.vocab_node] != DEAD          # state has one more, dead, slot at n_nodes
        if len(trie.partial_tok):
            ids = trie.tok_id[trie.partial_tok]
            live = ok[ids]
            if live.any():
                ends = state[trie.tok_node[trie.partial_tok[live]]]
                ok[ids[live]] = self._partials_fit(ends, trie.tok_pid[trie.partial_tok[live]])
        return ok

    def _walk_scalar(self, state: np.ndarray, start: int, base: int) -> None:
        """The nodes from `start` on (all deeper than the levels walked), one by one; their
        parents are all at `base` or later."""
        parents, classes = self.trie.parent_list, self.node_cls_list
        m = self.matcher
        item = m.trans.item
        out = state[base:].tolist()
        for n in range(start, self.trie.n_nodes):
            s = out[parents[n] - base]
            if s != DEAD:
                r = item(s, classes[n])
                if r < 0:
                    r = m.step(s, classes[n])
                    item = m.trans.item          # the table may have grown
                out[n - base] = r
        state[start:] = out[start - base:]

    def _partials_fit(self, cids: np.ndarray, pids: np.ndarray) -> np.ndarray:
        """For tokens ending inside a character: can their config take that character?"""
        uniq, inverse = np.unique(cids, return_inverse=True)
        rows = np.stack([self._partial_row(int(c)) for c in uniq])
        return rows[inverse, pids]

    def _partial_row(self, cid: int) -> np.ndarray:
        """bool (n_partials,): which of the vocabulary's partial characters the config takes."""
        row = self.partial_rows.get(cid)
        if row is None:
            row = np.zeros(len(self.trie.partials), dtype=bool)
            for st in self.matcher.configs[cid]:
                if st:
                    row |= self._partial_column(st[-1])
            self.partial_rows[cid] = row
        return row

    def _partial_column(self, pos: int) -> np.ndarray:
        """bool (n_partials,): the partial characters char element `pos` may complete to
        (CharSet.partial_fits over all of them at once)."""
        col = self.partial_cols.get(pos)
        if col is None:
            cs = self.matcher.charsets[pos]
            low, high, valid = self.trie.partial_low, self.trie.partial_high, self.trie.partial_valid
            if cs.any:
                col = valid.copy()
            else:
                hit = np.zeros(len(low), dtype=bool)
                for lo, hi in cs.ranges:
                    hit |= (lo <= high) & (low <= hi)
                col = valid & (hit != cs.negated)
            self.partial_cols[pos] = col
        return col

    def _continue_partial(self, cid: int, partial: tuple[int, int]) -> np.ndarray:
        """After a token that ended inside a character, only tokens that start with continuation
        bytes can follow: each is fed through the matcher (a few hundred tokens)."""
        ok = np.zeros(self.trie.n_vocab, dtype=bool)
        for i in self.trie.cont_tokens:
            if self.matcher.feed(cid, partial, self.trie.pieces[i])[0] != DEAD:
                ok[i] = True
        return ok
