"""llamapack's built-in chat templates, the names `--chat-template NAME` takes (runtime/chat_template.py
renders them): llama.cpp's built-in names, and "mistral".
"""
from __future__ import annotations

# Built-in templates: Jinja source (the helpers below only join strings). Except "mistral", each
# reproduces, character for character, the output of llama.cpp's hard-coded template of the same
# name (src/llama-chat.cpp, llm_chat_apply_template), which is what `--chat-template NAME` selects
# there: the same roles kept or dropped, the same trimming (C isspace), and literal "<s>"/"</s>"
# whatever the file's BOS/EOS texts. Like those, they begin with no BOS text, except the three
# where llama.cpp writes one (gigachat "<s>", smolvlm "<|im_start|>", hunyuan-vl): prompt() strips
# it when the tokenizer adds BOS itself, where llama.cpp's prompt would start with two BOS.

_WS = r"{%- set ws = ' \t\n\v\f\r' -%}"  # C isspace(), what llama.cpp's trim() strips
_TRIM = "message.content.strip(ws)"  # llama.cpp's trim(content)


def _each(turn: str, generation: str = "", head: str = "") -> str:
    """Jinja in the shape of most of llama.cpp's templates: `head`, the statements `turn` for
    every `message`, then the expression `generation` when add_generation_prompt."""
    gen = "{%- if add_generation_prompt -%}{{- " + generation + " -}}{%- endif -%}" if generation else ""
    return _WS + head + "{%- for message in messages -%}" + turn + "{%- endfor -%}" + gen


def _by_role(turns: str, generation: str = "", text: str = "message.content") -> str:
    """`_each` for a template that writes before + `text` + after for a role of `turns` (a Jinja
    dict literal, role -> (before, after)) and drops a message of any other role."""
    return _each("{%- if message.role in turns -%}"
                 "{{- turns[message.role][0] + " + text + " + turns[message.role][1] -}}{%- endif -%}",
                 generation, head="{%- set turns = " + turns + " -%}")


CHATML = (  # llama.cpp common/chat.cpp CHATML_TEMPLATE_SRC
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Mistral 7B Instruct v0.1/v0.2, Mixtral 8x7B Instruct: the official v0.2 tokenizer_config.json
# template ("<s>[INST] u1 [/INST]a1</s>[INST] u2 [/INST]"), which refuses a system message. Here a
# first system message is folded into the first user turn, "[INST] {system}\n\n{user} [/INST]",
# as llama.cpp's "mistral-v1" template and Mistral's later official templates do. Roles must
# alternate user/assistant after it. add_generation_prompt changes nothing ([/INST] ends the turn).
# (llama.cpp reads the name "mistral" as its "llama2".)
MISTRAL = (
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set system_message = messages[0].content -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in loop_messages -%}"
    "{%- if (message.role == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/... "
    "after an optional first system message') -}}"
    "{%- endif -%}"
    "{%- if message.role == 'user' -%}"
    "{%- if loop.first and system_message is defined -%}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message.content + ' [/INST]' -}}"
    "{%- else -%}"
    "{{- '[INST] ' + message.content + ' [/INST]' -}}"
    "{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{{- message.content + eos_token -}}"
    "{%- else -%}"
    "{{- raise_exception('Only user and assistant roles are supported, "
    "after an optional first system message') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def _mistral(lead: str, trail: str, trim_reply: bool) -> str:
    """llama.cpp's "mistral-v1" (lead " ", trail " "), "mistral-v3" (trail " ", replies trimmed),
    "mistral-v3-tekken" (no spaces): a system message is its text + "\n\n" inside the [INST]."""
    reply = _TRIM if trim_reply else "message.content"
    return _each(
        "{%- if not ns.in_turn -%}{{- '" + lead + "[INST]" + trail + "' -}}{%- set ns.in_turn = true -%}{%- endif -%}"
        "{%- if message.role == 'system' -%}{{- message.content + '\\n\\n' -}}"
        "{%- elif message.role == 'user' -%}{{- message.content + '" + lead + "[/INST]' -}}"
        "{%- else -%}{{- '" + trail + "' + " + reply + " + '</s>' -}}{%- set ns.in_turn = false -%}"
        "{%- endif -%}", head="{%- set ns = namespace(in_turn=false) -%}")


def _mistral_v7(space: str) -> str:
    """llama.cpp's "mistral-v7" (space " ") and "mistral-v7-tekken" (no space)."""
    return _each(
        "{%- if message.role == 'system' -%}"
        "{{- '[SYSTEM_PROMPT]" + space + "' + message.content + '[/SYSTEM_PROMPT]' -}}"
        "{%- elif message.role == 'user' -%}{{- '[INST]" + space + "' + message.content + '[/INST]' -}}"
        "{%- else -%}{{- '" + space + "' + message.content + '</s>' -}}{%- endif -%}")


def _llama2(sys_tags: bool, bos: bool = False, trim: bool = False) -> str:
    """llama.cpp's "llama2" (a system message is its text + "\n"), "llama2-sys" (<<SYS>> tags),
    "llama2-sys-bos" (and "<s>" before each [INST] but the first), "llama2-sys-strip" (and every
    message trimmed)."""
    text = _TRIM if trim else "message.content"
    system = "'<<SYS>>\\n' + " + text + " + '\\n<</SYS>>\\n\\n'" if sys_tags else text + " + '\\n'"
    return _each(
        "{%- if not ns.in_turn -%}{{- '" + ("<s>" if bos else "") + "[INST] ' -}}"
        "{%- set ns.in_turn = true -%}{%- endif -%}"
        "{%- if message.role == 'system' -%}{{- " + system + " -}}"
        "{%- elif message.role == 'user' -%}{{- " + text + " + ' [/INST]' -}}"
        "{%- else -%}{{- " + text + " + '</s>' -}}{%- set ns.in_turn = false -%}"
        "{%- endif -%}", head="{%- set ns = namespace(in_turn=true) -%}{{- '[INST] ' -}}")


LLAMA2 = _llama2(sys_tags=False)

LLAMA3 = _WS + (
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n'"
    " + message.content.strip(ws) + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

ZEPHYR = (
    "{%- for message in messages -%}"
    "{{- '<|' + message.role + '|>\\n' + message.content + '<|endoftext|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

GEMMA = _WS + (  # llama.cpp "gemma": system text merged into the next user turn
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' -%}"
    "{%- set ns.system = ns.system + message.content.strip(ws) -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message.role == 'assistant' else message.role -%}"
    "{{- '<start_of_turn>' + role + '\\n' -}}"
    "{%- if ns.system and role != 'model' -%}"
    "{{- ns.system + '\\n\\n' -}}{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{{- message.content.strip(ws) + '<end_of_turn>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

PHI3 = (  # llama.cpp "phi3"
    "{%- for message in messages -%}"
    "{{- '<|' + message.role + '|>\\n' + message.content + '<|end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

PHI4 = _each("{{- '<|im_start|>' + message.role + '<|im_sep|>' + message.content + '<|im_end|>' -}}",
             "'<|im_start|>assistant<|im_sep|>'")

FALCON3 = _each("{{- '<|' + message.role + '|>\\n' + message.content + '\\n' -}}", "'<|assistant|>\\n'")

MONARCH = _each("{{- ('' if loop.first else '<s>') + message.role + '\\n' + message.content + '</s>\\n' -}}",
                "'<s>assistant\\n'")

ORION = _each(  # system text goes into the next user turn, which ends with the reply's start
    "{%- if message.role == 'system' -%}{%- set ns.system = ns.system + message.content -%}"
    "{%- elif message.role == 'user' -%}"
    "{{- 'Human: ' + (ns.system + '\\n\\n' if ns.system else '') + message.content + '\\n\\nAssistant: </s>' -}}"
    "{%- set ns.system = '' -%}"
    "{%- else -%}{{- message.content + '</s>' -}}{%- endif -%}", head="{%- set ns = namespace(system='') -%}")

OPENCHAT = _each(  # "GPT4 Correct User: ...": the role's first letter upper-cased (ASCII, as C toupper)
    "{%- if message.role == 'system' -%}{{- message.content + '<|end_of_turn|>' -}}"
    "{%- else -%}{%- set first = message.role[:1] -%}"
    "{{- 'GPT4 Correct ' + (first.upper() if first and first in 'abcdefghijklmnopqrstuvwxyz' else first)"
    " + message.role[1:] + ': ' + message.content + '<|end_of_turn|>' -}}"
    "{%- endif -%}", "'GPT4 Correct Assistant:'")


def _vicuna(orca: bool) -> str:
    """llama.cpp's "vicuna" and "vicuna-orca" (a "SYSTEM: " line)."""
    system = "('SYSTEM: ', '\\n')" if orca else "('', '\\n\\n')"
    return _by_role("{'system': " + system + ", 'user': ('USER: ', '\\n'), "
                    "'assistant': ('ASSISTANT: ', '</s>\\n')}", "'ASSISTANT:'")


DEEPSEEK = _by_role(  # DeepSeek Coder
    "{'system': ('', ''), 'user': ('### Instruction:\\n', '\\n'), "
    "'assistant': ('### Response:\\n', '\\n<|EOT|>\\n')}", "'### Response:\\n'")

DEEPSEEK2 = _by_role(
    "{'system': ('', '\\n\\n'), 'user': ('User: ', '\\n\\n'), "
    "'assistant': ('Assistant: ', '<｜end▁of▁sentence｜>')}", "'Assistant:'")

DEEPSEEK3 = _by_role(  # DeepSeek V3, R1 and their distills
    "{'system': ('', '\\n\\n'), 'user': ('<｜User｜>', ''), "
    "'assistant': ('<｜Assistant｜>', '<｜end▁of▁sentence｜>')}", "'<｜Assistant｜>'")

DEEPSEEK_OCR = _each("{{- message.content -}}")

COMMAND_R = _by_role(
    "{'system': ('<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>', '<|END_OF_TURN_TOKEN|>'), "
    "'user': ('<|START_OF_TURN_TOKEN|><|USER_TOKEN|>', '<|END_OF_TURN_TOKEN|>'), "
    "'assistant': ('<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>', '<|END_OF_TURN_TOKEN|>')}",
    "'<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'", _TRIM)

CHATGLM3 = _each("{{- '<|' + message.role + '|>\\n ' + message.content -}}", "'<|assistant|>'",
                 head="{{- '[gMASK]sop' -}}")

CHATGLM4 = _each("{{- '<|' + message.role + '|>\\n' + message.content -}}", "'<|assistant|>\\n'",
                 head="{{- '[gMASK]<sop>' -}}")

GLMEDGE = _each("{{- '<|' + message.role + '|>\\n' + message.content -}}", "'<|assistant|>'")

MINICPM = _each("{%- if message.role == 'user' -%}{{- '<用户>' + message.content.strip(ws) + '<AI>' -}}"
                "{%- else -%}{{- message.content.strip(ws) -}}{%- endif -%}")

EXAONE3 = _by_role(
    "{'system': ('[|system|]', '[|endofturn|]\\n'), 'user': ('[|user|]', '\\n'), "
    "'assistant': ('[|assistant|]', '[|endofturn|]\\n')}", "'[|assistant|]'", _TRIM)

EXAONE4 = _by_role(
    "{'system': ('[|system|]', '[|endofturn|]\\n'), 'user': ('[|user|]', '\\n'), "
    "'assistant': ('[|assistant|]', '[|endofturn|]\\n'), 'tool': ('[|tool|]', '[|endofturn|]\\n')}",
    "'[|assistant|]'", _TRIM)

EXAONE_MOE = _by_role(
    "{'system': ('<|system|>\\n', '<|endofturn|>\\n'), 'user': ('<|user|>\\n', '<|endofturn|>\\n'), "
    "'assistant': ('<|assistant|>\\n', '<|endofturn|>\\n'), 'tool': ('<|tool|>\\n', '<|endofturn|>\\n')}",
    "'<|assistant|>\\n'", _TRIM)

RWKV_WORLD = _each(  # "\n\n" ends a turn; "Assistant:" follows a last user message, whatever add_ass
    "{%- if message.role == 'system' -%}{{- 'System: ' + message.content.strip(ws) + '\\n\\n' -}}"
    "{%- elif message.role == 'user' -%}"
    "{{- 'User: ' + message.content.strip(ws) + '\\n\\n' + ('Assistant:' if loop.last else '') -}}"
    "{%- elif message.role == 'assistant' -%}{{- 'Assistant: ' + message.content.strip(ws) + '\\n\\n' -}}"
    "{%- endif -%}")

GRANITE = _each(  # Granite 3.x
    "{{- '<|start_of_role|>' + message.role + '<|end_of_role|>'"
    " + ('<|tool_call|>' if message.role == 'assistant_tool_call' else '')"
    " + message.content + '<|end_of_text|>\\n' -}}", "'<|start_of_role|>assistant<|end_of_role|>'")

GRANITE4 = _each(  # llama.cpp's "granite-4.0" and "granite-4.1" write the same
    "{{- ('<|start_of_role|>assistant<|end_of_role|><|tool_call|>' if message.role == 'assistant_tool_call'"
    " else '<|start_of_role|>' + message.role + '<|end_of_role|>') + message.content + '<|end_of_text|>\\n' -}}",
    "'<|start_of_role|>assistant<|end_of_role|>'")

GIGACHAT = _each(  # "<s>" (a first system message after it), then user and assistant turns
    "{%- if loop.first and message.role == 'system' -%}{{- message.content + '<|message_sep|>' -}}"
    "{%- elif message.role == 'user' -%}{{- 'user<|role_sep|>' + message.content + '<|message_sep|>"
    "available functions<|role_sep|>[]<|message_sep|>' -}}"
    "{%- elif message.role == 'assistant' -%}{{- 'assistant<|role_sep|>' + message.content + '<|message_sep|>' -}}"
    "{%- endif -%}", "'assistant<|role_sep|>'", head="{{- '<s>' -}}")

MEGREZ = _each("{{- '<|role_start|>' + message.role + '<|role_end|>' + message.content + '<|turn_end|>' -}}",
               "'<|role_start|>assistant<|role_end|>'")

YANDEX = _by_role(  # no system role ("\n\n" ends a turn)
    "{'user': (' Пользователь: ', '\\n\\n'), 'assistant': (' Ассистент: ', '\\n\\n')}", "' Ассистент:[SEP]'")


def _bailing(generation: str, end: str = "", head: str = "") -> str:
    """llama.cpp's "bailing", "bailing-think", "bailing2" (Ling, Ring): "<role>ROLE</role>", the role
    upper-cased (ASCII letters, as C toupper) and "user" as HUMAN."""
    return _each(
        "{%- set ns = namespace(role='HUMAN' if message.role == 'user' else '') -%}"
        "{%- if message.role != 'user' -%}{%- for c in message.role -%}"
        "{%- set ns.role = ns.role + (c.upper() if c in 'abcdefghijklmnopqrstuvwxyz' else c) -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<role>' + ns.role + '</role>' + message.content + '" + end + "' -}}", generation, head)


BAILING = _bailing("'<role>ASSISTANT</role>'")
BAILING_THINK = _bailing("'<role>ASSISTANT</role><think>'")
BAILING2 = _bailing("'<role>ASSISTANT</role>'", "<|role_end|>",  # without a first system message, this one
                    head="{%- if not (messages and messages[0].role == 'system') -%}"
                    "{{- '<role>SYSTEM</role>detailed thinking off<|role_end|>' -}}{%- endif -%}")

LLAMA4 = _each("{{- '<|header_start|>' + message.role + '<|header_end|>\\n\\n' + message.content.strip(ws)"
               " + '<|eot|>' -}}", "'<|header_start|>assistant<|header_end|>\\n\\n'")

SMOLVLM = _each(  # "<|im_start|>" is SmolVLM's BOS; the turns are not chatml's
    "{%- if message.role == 'system' -%}{{- message.content + '\\n\\n' -}}"
    "{%- elif message.role == 'user' -%}{{- 'User: ' + message.content + '<end_of_utterance>\\n' -}}"
    "{%- else -%}{{- 'Assistant: ' + message.content + '<end_of_utterance>\\n' -}}{%- endif -%}",
    "'Assistant:'", head="{{- '<|im_start|>' -}}")

HUNYUAN_MOE = _each(
    "{%- if message.role == 'system' -%}{{- '<|startoftext|>' + message.content + '<|extra_4|>' -}}"
    "{%- elif message.role == 'assistant' -%}{{- message.content + '<|eos|>' -}}"
    "{%- else -%}{{- '<|startoftext|>' + message.content + '<|extra_0|>' -}}{%- endif -%}")

GPT_OSS = _each("{{- '<|start|>' + message.role + '<|message|>' + message.content"
                " + ('<|return|>' if message.role == 'assistant' else '<|end|>') -}}", "'<|start|>assistant'")

HUNYUAN_DENSE = _each(  # a system message counts only first
    "{%- if loop.first and message.role == 'system' -%}{{- message.content + '<｜hy_place▁holder▁no▁3｜>' -}}"
    "{%- elif message.role == 'assistant' -%}"
    "{{- '<｜hy_Assistant｜>' + message.content + '<｜hy_place▁holder▁no▁2｜>' -}}"
    "{%- elif message.role == 'user' -%}{{- '<｜hy_User｜>' + message.content + '<｜hy_Assistant｜>' -}}"
    "{%- endif -%}")

HUNYUAN_VL = _each(  # the BOS text first; a system message counts only first
    "{%- if loop.first and message.role == 'system' -%}{{- message.content + '<｜hy_place▁holder▁no▁3｜>' -}}"
    "{%- elif message.role == 'user' -%}{{- message.content + '<｜hy_User｜>' -}}"
    "{%- elif message.role == 'assistant' -%}{{- message.content + '<｜hy_Assistant｜>' -}}"
    "{%- endif -%}", head="{{- '<｜hy_begin▁of▁sentence｜>' -}}")

KIMI_K2 = _each(  # a message of another role is its bare text + <|im_end|>
    "{{- turns.get(message.role, '') + message.content + '<|im_end|>' -}}",
    "'<|im_assistant|>assistant<|im_middle|>'",
    head="{%- set turns = {'system': '<|im_system|>system<|im_middle|>', 'user': '<|im_user|>user<|im_middle|>', "
    "'assistant': '<|im_assistant|>assistant<|im_middle|>', 'tool': '<|im_system|>tool<|im_middle|>'} -%}")

SEED_OSS = _each("{{- '<seed:bos>' + message.role + '\\n' + (message.content.strip(ws) if message.role == 'assistant'"
                 " else message.content) + '<seed:eos>' -}}", "'<seed:bos>assistant\\n'")

GROK2 = _by_role(  # a reply is not trimmed
    "{'system': ('System: ', '<|separator|>\\n\\n'), 'user': ('Human: ', '<|separator|>\\n\\n'), "
    "'assistant': ('Assistant: ', '<|separator|>\\n\\n')}", "'Assistant:'",
    "(message.content if message.role == 'assistant' else message.content.strip(ws))")

PANGU_EMBEDDED = _each(  # an empty system turn first when there is none
    "{%- if loop.first and message.role != 'system' -%}{{- '[unused9]系统：[unused10]' -}}{%- endif -%}"
    "{%- if message.role in turns -%}{{- '[unused9]' + turns[message.role] + '：' + message.content + '[unused10]' -}}"
    "{%- endif -%}", "'[unused9]助手：'",
    head="{%- set turns = {'system': '系统', 'user': '用户', 'assistant': '助手', 'tool': '工具', 'function': '方法'} -%}")

SOLAR_OPEN = _each("{{- '<|begin|>' + message.role + '<|content|>' + message.content + '<|end|>' -}}",
                   "'<|begin|>assistant'")

BUILTIN_TEMPLATES: dict[str, str] = {  # llama.cpp's names (llama_chat_builtin_templates) and "mistral"
    "bailing": BAILING, "bailing-think": BAILING_THINK, "bailing2": BAILING2,
    "chatglm3": CHATGLM3, "chatglm4": CHATGLM4, "chatml": CHATML, "command-r": COMMAND_R,
    "deepseek": DEEPSEEK, "deepseek-ocr": DEEPSEEK_OCR, "deepseek2": DEEPSEEK2, "deepseek3": DEEPSEEK3,
    "exaone-moe": EXAONE_MOE, "exaone3": EXAONE3, "exaone4": EXAONE4, "falcon3": FALCON3, "gemma": GEMMA,
    "gigachat": GIGACHAT, "glmedge": GLMEDGE, "gpt-oss": GPT_OSS,
    "granite": GRANITE, "granite-4.0": GRANITE4, "granite-4.1": GRANITE4, "grok-2": GROK2,
    "hunyuan-dense": HUNYUAN_DENSE, "hunyuan-moe": HUNYUAN_MOE, "hunyuan-vl": HUNYUAN_VL, "kimi-k2": KIMI_K2,
    "llama2": LLAMA2, "llama2-sys": _llama2(sys_tags=True), "llama2-sys-bos": _llama2(sys_tags=True, bos=True),
    "llama2-sys-strip": _llama2(sys_tags=True, trim=True), "llama3": LLAMA3, "llama4": LLAMA4,
    "megrez": MEGREZ, "minicpm": MINICPM, "mistral": MISTRAL, "mistral-v1": _mistral(" ", " ", False),
    "mistral-v3": _mistral("", " ", True), "mistral-v3-tekken": _mistral("", "", False),
    "mistral-v7": _mistral_v7(" "), "mistral-v7-tekken": _mistral_v7(""), "monarch": MONARCH,
    "openchat": OPENCHAT, "orion": ORION, "pangu-embedded": PANGU_EMBEDDED, "phi3": PHI3, "phi4": PHI4,
    "rwkv-world": RWKV_WORLD, "seed_oss": SEED_OSS, "smolvlm": SMOLVLM, "solar-open": SOLAR_OPEN,
    "vicuna": _vicuna(orca=False), "vicuna-orca": _vicuna(orca=True), "yandex": YANDEX, "zephyr": ZEPHYR,
}
