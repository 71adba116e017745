"""GGUF / GGML constants: pure data, no logic.

Values follow llama.cpp's ``ggml.h`` / ``gguf.h`` and the ``gguf`` Python package
(``gguf.constants``); ``tests/test_gguf.py`` checks the type table against it.
"""

from __future__ import annotations

from enum import IntEnum

from runtime.quant_types import WEIGHT_TYPES

# --- file header ------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"                 # first 4 bytes; as a little-endian uint32: 0x46554747
GGUF_SUPPORTED_VERSIONS = (2, 3)     # v1 (32-bit counts) is gone from llama.cpp too; v3 == v2 on LE
GGUF_DEFAULT_ALIGNMENT = 32          # used when the file has no `general.alignment`
GGML_MAX_DIMS = 4                    # a tensor has 1..4 dimensions


class GGUFValueType(IntEnum):
    """Type tag of a metadata value (uint32 on disk)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7       # one byte; 0 is false, anything else true (as llama.cpp reads it)
    STRING = 8     # uint64 byte length + UTF-8 bytes, no terminator
    ARRAY = 9      # uint32 element type + uint64 count + elements
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct/numpy format character of each fixed-size value type (always read little-endian).
GGUF_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


class GGMLType(IntEnum):
    """Storage type of a tensor (uint32 on disk). Ids 4, 5 and 31-33 were removed from ggml."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


# (block_size, type_size): every `block_size` consecutive elements of a row are stored in
# `type_size` bytes, so a row of ne[0] elements takes ne[0] // block_size * type_size bytes.
GGML_QUANT_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 36),     # ggml: 2 fp16 + 32 int8 (gguf-py 0.19 still says 40)
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66),
    GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82),
    GGMLType.IQ4_XS: (256, 136),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (256, 56),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 54),
    GGMLType.TQ2_0: (256, 66),
    GGMLType.MXFP4: (32, 17),
}

# --- metadata keys ----------------------------------------------------------------------------
# Keys with "{arch}" are formatted with the value of `general.architecture`, e.g. "llama".

KEY_GENERAL_ARCHITECTURE = "general.architecture"
KEY_GENERAL_NAME = "general.name"
KEY_GENERAL_ALIGNMENT = "general.alignment"      # must be uint32, a nonzero power of two
KEY_GENERAL_FILE_TYPE = "general.file_type"
KEY_GENERAL_QUANTIZATION_VERSION = "general.quantization_version"

KEY_VOCAB_SIZE = "{arch}.vocab_size"
KEY_CONTEXT_LENGTH = "{arch}.context_length"
KEY_EMBEDDING_LENGTH = "{arch}.embedding_length"
KEY_BLOCK_COUNT = "{arch}.block_count"
KEY_FEED_FORWARD_LENGTH = "{arch}.feed_forward_length"
KEY_EXPERT_COUNT = "{arch}.expert_count"
KEY_EXPERT_USED_COUNT = "{arch}.expert_used_count"
KEY_HEAD_COUNT = "{arch}.attention.head_count"
KEY_HEAD_COUNT_KV = "{arch}.attention.head_count_kv"
KEY_KEY_LENGTH = "{arch}.attention.key_length"
KEY_VALUE_LENGTH = "{arch}.attention.value_length"
KEY_LAYER_NORM_RMS_EPS = "{arch}.attention.layer_norm_rms_epsilon"
KEY_ROPE_DIMENSION_COUNT = "{arch}.rope.dimension_count"
KEY_ROPE_FREQ_BASE = "{arch}.rope.freq_base"
KEY_ROPE_SCALING_TYPE = "{arch}.rope.scaling.type"
KEY_ROPE_SCALING_FACTOR = "{arch}.rope.scaling.factor"
KEY_ROPE_SCALING_ATTN_FACTOR = "{arch}.rope.scaling.attn_factor"       # LongRoPE's magnitude factor
KEY_ROPE_SCALING_ORIG_CTX_LEN = "{arch}.rope.scaling.original_context_length"  # YaRN, LongRoPE
KEY_ROPE_FREQ_BASE_SWA = "{arch}.rope.freq_base_swa"                  # sliding-window layers' base
KEY_EXPERT_FEED_FORWARD_LENGTH = "{arch}.expert_feed_forward_length"  # qwen3moe: n_ff per expert
KEY_SLIDING_WINDOW = "{arch}.attention.sliding_window"
KEY_SLIDING_WINDOW_PATTERN = "{arch}.attention.sliding_window_pattern"
KEY_ATTN_LOGIT_SOFTCAPPING = "{arch}.attn_logit_softcapping"
KEY_FINAL_LOGIT_SOFTCAPPING = "{arch}.final_logit_softcapping"

KEY_TOKENIZER_MODEL = "tokenizer.ggml.model"          # "llama" (SentencePiece) or "gpt2" (BPE)
KEY_TOKENIZER_PRE = "tokenizer.ggml.pre"              # pre-tokenizer name, e.g. "smollm"
KEY_TOKENIZER_TOKENS = "tokenizer.ggml.tokens"        # array of str
KEY_TOKENIZER_SCORES = "tokenizer.ggml.scores"        # array of float32
KEY_TOKENIZER_TOKEN_TYPE = "tokenizer.ggml.token_type"  # array of int32 (TokenType)
KEY_TOKENIZER_MERGES = "tokenizer.ggml.merges"        # array of str, "a b"
KEY_TOKENIZER_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_TOKENIZER_ADD_EOS = "tokenizer.ggml.add_eos_token"
KEY_TOKENIZER_ADD_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
KEY_TOKENIZER_CHAT_TEMPLATE = "tokenizer.chat_template"
KEY_TOKENIZER_TOKEN_ID = "tokenizer.ggml.{name}_token_id"  # name: one of TOKENIZER_ID_NAMES
TOKENIZER_ID_NAMES = ("bos", "eos", "eot", "eom", "unknown", "padding", "seperator", "mask",
                      "prefix", "suffix", "middle",  # older FIM names
                      "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")


class TokenType(IntEnum):
    """Values of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6

# --- expected metadata types --------------------------------------------------------------------
# The GGUF type each key the runtime reads must have, as llama.cpp's model loader checks it: a
# scalar key has exactly one type (a count is UINT32, a float FLOAT32); an array is (ARRAY, element
# type). Keys not listed are not checked. runtime/gguf.py (get_key, check_metadata_types) applies it.

_T = GGUFValueType
_STR, _U32, _F32, _BOOL = ((_T.STRING,),), ((_T.UINT32,),), ((_T.FLOAT32,),), ((_T.BOOL,),)
METADATA_TYPES: dict[str, tuple[tuple[GGUFValueType, ...], ...]] = {
    KEY_GENERAL_ARCHITECTURE: _STR,
    KEY_GENERAL_NAME: _STR,
    KEY_GENERAL_ALIGNMENT: _U32,
    KEY_GENERAL_FILE_TYPE: _U32,
    KEY_GENERAL_QUANTIZATION_VERSION: _U32,
    KEY_VOCAB_SIZE: _U32,
    KEY_CONTEXT_LENGTH: _U32,
    KEY_EMBEDDING_LENGTH: _U32,
    KEY_BLOCK_COUNT: _U32,
    KEY_FEED_FORWARD_LENGTH: _U32,   # llama.cpp also takes a per-layer array; this runtime does not
    KEY_EXPERT_COUNT: _U32,
    KEY_EXPERT_USED_COUNT: _U32,
    KEY_HEAD_COUNT: _U32,            # same
    KEY_HEAD_COUNT_KV: _U32,         # same
    KEY_KEY_LENGTH: _U32,
    KEY_VALUE_LENGTH: _U32,
    KEY_LAYER_NORM_RMS_EPS: _F32,
    KEY_ROPE_DIMENSION_COUNT: _U32,
    KEY_ROPE_FREQ_BASE: _F32,
    KEY_ROPE_SCALING_TYPE: _STR,
    KEY_ROPE_SCALING_FACTOR: _F32,
    KEY_ROPE_SCALING_ATTN_FACTOR: _F32,
    KEY_ROPE_SCALING_ORIG_CTX_LEN: _U32,
    KEY_ROPE_FREQ_BASE_SWA: _F32,
    KEY_EXPERT_FEED_FORWARD_LENGTH: _U32,
    KEY_SLIDING_WINDOW: _U32,
    KEY_SLIDING_WINDOW_PATTERN: _U32,  # llama.cpp also takes a per-layer bool array; refused here
    KEY_ATTN_LOGIT_SOFTCAPPING: _F32,
    KEY_FINAL_LOGIT_SOFTCAPPING: _F32,
    KEY_TOKENIZER_MODEL: _STR,
    KEY_TOKENIZER_PRE: _STR,
    KEY_TOKENIZER_TOKENS: ((_T.ARRAY, _T.STRING),),
    KEY_TOKENIZER_SCORES: ((_T.ARRAY, _T.FLOAT32),),
    # token types are read as 32-bit ints: llama.cpp's int-array reader takes either signedness
    KEY_TOKENIZER_TOKEN_TYPE: ((_T.ARRAY, _T.INT32), (_T.ARRAY, _T.UINT32)),
    KEY_TOKENIZER_MERGES: ((_T.ARRAY, _T.STRING),),
    KEY_TOKENIZER_ADD_BOS: _BOOL,
    KEY_TOKENIZER_ADD_EOS: _BOOL,
    KEY_TOKENIZER_ADD_SPACE_PREFIX: _BOOL,
    KEY_TOKENIZER_CHAT_TEMPLATE: _STR,
    **{KEY_TOKENIZER_TOKEN_ID.format(name=name): _U32 for name in TOKENIZER_ID_NAMES},
}

# --- what the runtime can run -------------------------------------------------------------------

SUPPORTED_ARCHS = ("llama",)

# Tensor types the C kernels compute with: csrc/type_list.h's weight types, through the
# generated runtime/quant_types.py (plain data: a model is checked without loading the kernels).
RUNTIME_TENSOR_TYPES = frozenset(GGMLType(t) for t in WEIGHT_TYPES.values())

# Hard limits on hyperparameters, checked before anything is sized by them.
MAX_LAYERS = 512            # llama.cpp's LLAMA_MAX_LAYERS
MAX_EXPERTS = 512           # llama.cpp's LLAMA_MAX_EXPERTS
MAX_CONTEXT = 1 << 30       # positions are int32 in the kernels; the KV cache rounds n_ctx up
MAX_DIM = (1 << 31) - 1     # every size the kernels take is a C int
ROPE_SCALING_FACTOR_RANGE = (1e-3, 1e6)  # linear factors: outside, angles overflow float32 or vanish
