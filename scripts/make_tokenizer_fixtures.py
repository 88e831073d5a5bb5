#!/usr/bin/env python3
"""Make the GGUF-vocabulary tokenizer fixtures in models/testdata/tokenizers/.

Writes, for a SentencePiece ("llama") vocabulary and for byte-level BPE ("gpt2") vocabularies with the
pre-tokenizers `gpt-2`, `llama-bpe`, `qwen2`, `smollm` and `default`:
  <name>.gguf            vocab-only GGUF (no tensors) with the tokenizer.* keys llama.cpp's
                         convert_hf_to_gguf.py would write for the equivalent Hugging Face folder
  <name>.tokenizer.json  the equivalent Hugging Face `tokenizers` tokenizer
plus `llama-small.vocab.gguf` (the tokenizer.* keys of ../shared/models/llama-small-quant/model-f32.gguf)
and `cases.json` (hard strings with the ids, pieces and decodes the `tokenizers` library gives).

Deterministic: running it twice gives byte-identical files (single-threaded training, fixed options).
The committed files were made with these versions (other versions may train other vocabularies):
  Python 3.11.7, tokenizers 0.23.3, transformers 5.25.0, sentencepiece 0.2.3, gguf 0.19.0,
  protobuf 7.36.2, numpy 2.4.6
Set up:  python3 -m venv /work/pyenv && /work/pyenv/bin/pip install tokenizers==0.23.3 \
           transformers==5.25.0 sentencepiece==0.2.3 gguf==0.19.0 protobuf numpy jinja2
Run:     /work/pyenv/bin/python scripts/make_tokenizer_fixtures.py [--shared DIR] [--out DIR]
             [--llama-cpp-results FILE]
`--llama-cpp-results` merges the ids an external llama.cpp run gave (a JSON file
{fixture: {case_name: {"text", "ids", "ids_no_special", "ids_no_parse_special", "detok"}}}, see
models/testdata/README.md) into cases.json; without it, cases.json keeps the llama.cpp results of
the cases.json already in --out for every fixture whose GGUF is byte-identical (gguf_sha256), so
that regenerating the fixtures without llama.cpp at hand does not drop them.
"""
from __future__ import annotations

import os

# Must precede importing tokenizers: training must not depend on the thread count.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import gguf
import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import normalizers

REPO = Path(__file__).resolve().parents[1]
EXPECTED_VERSIONS = {
    "tokenizers": "0.23.3",
    "transformers": "5.25.0",
    "sentencepiece": "0.2.3",
    "gguf": "0.19.0",
}

# ---------------------------------------------------------------------------------------------------
# training text: the Shakespeare corpus plus a small multilingual / code snippet, repeated so that its
# characters and merges make it into the ~1000-token vocabularies
# ---------------------------------------------------------------------------------------------------
EXTRA_TEXT = """\
Café, naïve, résumé, façade, jalapeño, Ångström, Straße, Mädchen, über, señor, coöperate.
L'élève a dit : « Où est l'hôtel ? » — C'est là-bas, près de la forêt.
¿Qué tal? ¡Muy bien! Ça va très bien, merci. Grüße aus München.
Tiếng Việt có dấu. Čeština, Polski: zażółć gęślą jaźń. Română: știință.
Русский текст: привет, мир! Български: нещо на Български. Ελληνικά: γειά σου κόσμε.
中文：我想在苹果公司工作。今天天气很好，我们去公园散步吧。
日本語：今日はいい天気ですね。カタカナとひらがな。
한국어: 안녕하세요, 세계! 오늘 날씨가 좋네요.
Emoji: 🚀 🎉 😀 👍 ❤️ 🦙 ✅ 🔥 🌍
Numbers: 0 1 2 3 42 100 2024 3.14159 1,000,000 007 12345678
def fibonacci(n: int) -> int:
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)

class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self):
        print(f"Hello, {self.name}!")  # say hi

fn main() {
\tlet xs: Vec<u32> = (0..10).map(|x| x * x).collect();
\tfor x in &xs {
\t\tprintln!("{}", x);
\t}
}

#include <stdio.h>
int main(void) { printf("%d\\n", 42); return 0; }
{"key": "value", "list": [1, 2, 3], "nested": {"ok": true, "none": null}}
<html><body><p class="x">Hi &amp; bye</p></body></html>
SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;
"""
EXTRA_REPEAT = 20

VOCAB_SIZE = 1000

# the user-defined (non-special, "added") token of every fixture; it does not look special to
# llama.cpp's converter (no <|...|>), so it becomes USER_DEFINED, not CONTROL
USER_TOKEN = "xyzzy"

# ---------------------------------------------------------------------------------------------------
# pre-tokenizer regexes
# ---------------------------------------------------------------------------------------------------
# as in the real tokenizer.json files (and in transformers' GPT2/Qwen2 tokenizer classes)
GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT regexes for a BPE vocabulary, applied one after the other
DEFAULT_RES = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
]


def bpe_pre_tokenizer(pre: str):
    if pre == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre == "llama-bpe":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    if pre == "qwen2":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    if pre == "default":
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in DEFAULT_RES]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    raise ValueError(pre)


# per BPE fixture: special (control) tokens, where they go, which are BOS/EOS, the post-processor
BPE_FIXTURES = {
    # GPT-2: one special token at the end, BOS = EOS = UNK = <|endoftext|>, nothing added on encode
    "gpt-2": dict(specials=["<|endoftext|>"], specials_first=False, bos="<|endoftext|>",
                  eos="<|endoftext|>", unk="<|endoftext|>", template_bos=False,
                  post=lambda: processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
                  chat=("<|endoftext|>", "<|endoftext|>")),
    # Llama 3 (instruct): specials after the BPE vocabulary, BOS added by a TemplateProcessing
    "llama-bpe": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                "<|end_header_id|>", "<|eot_id|>"],
                      specials_first=False, bos="<|begin_of_text|>", eos="<|eot_id|>", unk=None,
                      template_bos=True, ignore_merges=True,
                      chat=("<|start_header_id|>", "<|end_header_id|>")),
    # Qwen2.5 (instruct): NFC normalizer, specials after the BPE vocabulary, no BOS in tokenizer_config
    # (config.json has bos_token_id = <|endoftext|>), EOS <|im_end|>, nothing added on encode
    "qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], specials_first=False,
                  bos=None, eos="<|im_end|>", unk=None, pad="<|endoftext|>",
                  config_ids={"bos_token_id": "<|endoftext|>", "eos_token_id": "<|im_end|>"},
                  template_bos=False, nfc=True,
                  post=lambda: processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
                  chat=("<|im_start|>", "<|im_end|>")),
    # SmolLM2 (instruct): specials are ids 0.., BOS <|im_start|>, EOS <|im_end|>, nothing added on encode
    "smollm": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], specials_first=True,
                   bos="<|im_start|>", eos="<|im_end|>", unk="<|endoftext|>", template_bos=False,
                   post=lambda: processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
                   chat=("<|im_start|>", "<|im_end|>")),
    # llama.cpp's fallback pre-tokenizer for a gpt2 vocabulary (tokenizer.ggml.pre = "default");
    # no real model family, GPT-2-like otherwise
    "default": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], specials_first=False,
                    bos="<|endoftext|>", eos="<|endoftext|>", unk=None, template_bos=False,
                    post=lambda: processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
                    chat=("<|im_start|>", "<|im_end|>")),
}

SPM_CONTROL = ["<|im_start|>", "<|im_end|>"]

# ---------------------------------------------------------------------------------------------------
# test strings; {C1} {C2} {BOS} {EOS} {U} are replaced per fixture by its own control tokens, BOS, EOS
# and user-defined token
# ---------------------------------------------------------------------------------------------------
CASES = [
    ("empty", ""),
    ("space", " "),
    ("two_spaces", "  "),
    ("newline", "\n"),
    ("tab", "\t"),
    ("hello", "Hello world"),
    ("hello_lower", "hello world"),
    ("leading_space", " Hello"),
    ("leading_spaces", "   Hello"),
    ("trailing_spaces", "Hello   "),
    ("space_runs", "a  b   c    d     e"),
    ("tabs_newlines", "a\tb\t\tc\n\nd\r\ne \n \n\n  \n"),
    ("whitespace_only", " \t \n\t\n  \r\n   "),
    ("chktxt_ws", "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n"),
    ("contractions", "I'm sure you'll see he's there; they've said we'd go, it's ok."),
    ("contractions_upper", "DON'T, I'LL, WE'VE, She'S, 'RE you sure? 'M not sure, 'D you like"),
    ("quotes", "''''''```````\"\"\"\"......!!!!!!?????? ------======="),
    ("digits", "1 12 123 1234 12345 1234567 3.14159 2024-01-02 0007"),
    ("digit_runs", "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3"),
    ("numbers_unicode", "½ x² ٣٤٥ Ⅻ ① ４２"),
    ("accents", "Café naïve résumé Ångström façade Straße"),
    ("accents_nfd", "Cafe\u0301 nai\u0308ve n\u0303"),
    ("french", "L'élève a dit : « Où est l'hôtel ? »"),
    ("spanish_punct", "¿Qué tal? ¡Muy bien!"),
    ("cjk", "我想在apple工作1314151天～ 今日はいい天気 한국어 텍스트"),
    ("cjk_unseen", "鬱龘 齉 𠀋"),
    ("emoji", "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👍🏽"),
    ("mixed_scripts", "нещо на Български Ελληνικά עברית العربية हिन्दी ไทย កាន់តែពិសេសអាច😁"),
    ("nbsp_and_friends", "a\u00a0b\u2009c\u3000d\u200be"),
    ("code_python", "def foo(x):\n    if x > 0:\n        return x ** 2\n    return -x  # negative\n"),
    ("code_rust", "fn main() {\n\tlet v: Vec<u32> = (0..10).collect();\n\tprintln!(\"{:?}\", v);\n}\n"),
    ("code_json", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}"),
    ("punct", "Hello, world! How are you? (fine) [ok] {yes} <tag> a+b=c; x|y ~z ^w $5 @me #tag %d && `tick`"),
    ("url", "https://example.com/path?q=1&r=2#frag"),
    ("shakespeare", "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer"),
    ("long_word", "Honorificabilitudinitatibus antidisestablishmentarianism"),
    ("chat", "{C1}user\nhi{C2}\n{C1}assistant\nHello!{C2}"),
    ("ctrl_spaces", " {C1} spaced {C2} "),
    ("ctrl_adjacent", "{C1}{C2}{C1}"),
    ("ctrl_in_word", "abc{C1}def"),
    ("ctrl_partial", "{C1P} not a token"),
    ("bos_in_text", "{BOS}Hello"),
    ("eos_in_text", "Hello{EOS}"),
    ("user_token", "{U}"),
    ("user_in_word", "plugh{U}plugh"),
    ("user_spaces", " {U} {U}  {U}\n"),
    ("user_and_ctrl", "{C1}{U} x{C2}"),
    ("spm_specials_as_text", "<s>hi</s> <unk>"),
    ("literal_metaspace", "a\u2581b \u2581c\u2581"),
    ("space_before_punct", "Hello , world ! Is it ? Yes . 'tis he 's here ' quoted '"),
    ("unicode_spaces", "a\u0085b\u2028c\u2029d\u00a0\u00a0e\u3000"),
    ("control_chars", "a\x00b\x1bc\x7fd\x0be\x0cf\x1fg"),
    ("combining_marks", "e\u0301\u0302 a\u0308b \u0915\u094d\u0937"),
    ("astral", "\U0001d400\U0001d401\U0001d7cf\U0001d7d0 \U0001f600x\U00020000"),
    ("format_chars", "soft\u00adhyphen zero\u200bwidth \ufeffbom rtl\u200fmark"),
]


def check_versions():
    got = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
           "sentencepiece": spm.__version__, "gguf": _dist_version("gguf")}
    for k, v in EXPECTED_VERSIONS.items():
        if got[k] != v:
            print(f"warning: {k} {got[k]} is not the {v} the committed fixtures were made with; "
                  f"the output may differ", file=sys.stderr)
    return got


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


def training_lines(shared: Path) -> list[str]:
    """Paragraphs (text between blank lines, newlines kept) of Shakespeare + the extra snippet."""
    text = (shared / "data" / "shakespeare" / "input.txt").read_text(encoding="utf-8")
    text = text + "\n\n" + (EXTRA_TEXT + "\n") * EXTRA_REPEAT
    return text.splitlines(keepends=True)


# ---------------------------------------------------------------------------------------------------
# GGUF writing (what llama.cpp's convert_hf_to_gguf.py does with --vocab-only, tokenizer part only)
# ---------------------------------------------------------------------------------------------------
def does_token_look_special(token_text: str) -> bool:
    # convert_hf_to_gguf.py (conversion/base.py) TextModel.does_token_look_special
    seems_special = token_text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
    seems_special = seems_special or (token_text.startswith("<|") and token_text.endswith("|>"))
    seems_special = seems_special or (token_text.startswith("<｜") and token_text.endswith("｜>"))
    seems_special = seems_special or (token_text.startswith("<unused") and token_text.endswith(">"))
    return seems_special


def special_vocab(hf_dir: Path, **kw) -> gguf.SpecialVocab:
    """gguf-py's SpecialVocab (merges, special token ids, add_*_token flags), plus one rule of the newer
    gguf-py that llama.cpp's current convert_hf_to_gguf.py uses and PyPI's gguf 0.19.0 lacks: a ByteLevel
    post-processor (alone or in a Sequence) means add_bos_token = add_eos_token = false unless a
    TemplateProcessing says otherwise."""
    sv = gguf.SpecialVocab(hf_dir, **kw)
    tj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    post = tj.get("post_processor") or {}
    if any(p.get("type") == "ByteLevel" for p in post.get("processors", [post])):
        sv.add_special_token.setdefault("bos", False)
        sv.add_special_token.setdefault("eos", False)
    return sv


def write_gguf(path: Path, name: str, kvs):
    """kvs: callable(writer) adding the tokenizer keys. No tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    kvs(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_gguf_vocab(hf_dir: Path):
    """convert_hf_to_gguf.py TextModel._create_vocab_sentencepiece for this folder."""
    sp = spm.SentencePieceProcessor()
    sp.LoadFromFile(str(hf_dir / "tokenizer.model"))
    config = json.loads((hf_dir / "config.json").read_text())
    vocab_size = config.get("vocab_size") or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    toktypes = [gguf.TokenType.UNUSED] * vocab_size
    for token_id in range(sp.vocab_size()):
        if token_id >= vocab_size:
            break
        toktype = gguf.TokenType.NORMAL
        if sp.IsUnknown(token_id):
            toktype = gguf.TokenType.UNKNOWN
        elif sp.IsControl(token_id):
            toktype = gguf.TokenType.CONTROL
        elif sp.IsUnused(token_id):
            toktype = gguf.TokenType.UNUSED
        elif sp.IsByte(token_id):
            toktype = gguf.TokenType.BYTE
        tokens[token_id] = sp.IdToPiece(token_id).encode("utf-8")
        scores[token_id] = sp.GetScore(token_id)
        toktypes[token_id] = toktype
    assert not (hf_dir / "added_tokens.json").exists()
    tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    for token_id, data in tc.get("added_tokens_decoder", {}).items():
        token_id = int(token_id)
        token = data["content"]
        if token_id >= vocab_size:
            continue
        if data.get("special") or does_token_look_special(token):
            toktypes[token_id] = gguf.TokenType.CONTROL
        else:
            token = token.replace("\u2581", " ")
            toktypes[token_id] = gguf.TokenType.USER_DEFINED
        scores[token_id] = -1000.0
        tokens[token_id] = token.encode("utf-8")
    return tokens, scores, toktypes


def bpe_gguf_vocab(hf_dir: Path):
    """convert_hf_to_gguf.py TextModel.get_vocab_base for this folder."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    config = json.loads((hf_dir / "config.json").read_text())
    vocab_size = config.get("vocab_size", len(tokenizer.vocab))
    assert max(tokenizer.vocab.values()) < vocab_size
    reverse_vocab = {id_: tok for tok, id_ in tokenizer.vocab.items()}
    added_vocab = tokenizer.get_added_vocab()
    added_tokens_decoder = tokenizer.added_tokens_decoder
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in reverse_vocab:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        token = reverse_vocab[i]
        if token in added_vocab:
            if not added_tokens_decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added_tokens_decoder[i].special or does_token_look_special(token):
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, toktypes


# ---------------------------------------------------------------------------------------------------
# SentencePiece fixture
# ---------------------------------------------------------------------------------------------------
def make_spm(lines, out: Path, work: Path):
    spm.set_random_generator_seed(1234)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([ln.rstrip("\n") for ln in lines if ln.strip("\n")]),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        # Llama 2's trainer settings (its tokenizer.model trainer_spec), scaled down
        character_coverage=0.99995,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        max_sentencepiece_length=16,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_surface=" \u2047 ",
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    hf = work / "spm-hf"
    hf.mkdir()
    (hf / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
    n_sp = sp.vocab_size()
    assert n_sp == VOCAB_SIZE, n_sp

    # Hugging Face side: transformers' own SentencePiece converter (v5 `TokenizersBackend` loading a
    # tokenizer.model -> `SpmConverter.build_tokenizer_from_spm_proto`), legacy=True: a dummy prefix for
    # every text chunk between added tokens, as llama.cpp (see the README for why not `LlamaTokenizer`)
    from transformers import TokenizersBackend
    tok = TokenizersBackend.from_pretrained(
        str(hf), legacy=True, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False,
        model_max_length=4096)
    tok.add_special_tokens({"additional_special_tokens": [
        AddedToken(t, special=True, normalized=False) for t in SPM_CONTROL]})
    tok.add_tokens([AddedToken(USER_TOKEN, special=False, normalized=False)])
    tok.update_post_processor()  # "<s> $A": add_bos_token=True, add_eos_token=False
    bos_id = tok.convert_tokens_to_ids("<s>")
    tok.save_pretrained(str(hf))
    # transformers v5 keeps the added tokens only in tokenizer.json; real Llama-2-style folders (saved by
    # v4) also list them, with add_bos_token/add_eos_token, in tokenizer_config.json, which is where
    # llama.cpp's converter reads them from
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    tj = json.loads((hf / "tokenizer.json").read_text())
    tc = {"add_bos_token": True, "add_eos_token": False,
          "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                    "single_word", "special")}
                                   for a in tj["added_tokens"]},
          **{k: v for k, v in tc.items() if k not in ("is_local", "local_files_only")}}
    (hf / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    n_total = len(tok)
    assert n_total == n_sp + len(SPM_CONTROL) + 1, n_total
    (hf / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": n_total,
        "bos_token_id": bos_id, "eos_token_id": tok.convert_tokens_to_ids("</s>")}, indent=2))
    backend_final = Tokenizer.from_file(str(hf / "tokenizer.json"))
    backend_final.save(str(out / "spm.tokenizer.json"), pretty=False)

    tokens, scores, toktypes = spm_gguf_vocab(hf)

    def kvs(w):
        # TextModel._set_vocab_sentencepiece
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(toktypes)
        special_vocab(hf, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)

    write_gguf(out / "spm.gguf", "cranegrad tokenizer fixture spm", kvs)
    return hf


# ---------------------------------------------------------------------------------------------------
# byte-level BPE fixtures
# ---------------------------------------------------------------------------------------------------
def make_bpe(pre: str, lines, out: Path, work: Path):
    spec = BPE_FIXTURES[pre]
    specials = spec["specials"]
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    if spec.get("nfc"):
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = bpe_pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    n_specials_first = len(specials) if spec["specials_first"] else 0
    # the vocabulary (with the specials at the end, and the user-defined token) should be VOCAB_SIZE
    n_train = VOCAB_SIZE - 1 - (0 if spec["specials_first"] else len(specials))
    trainer = trainers.BpeTrainer(
        vocab_size=n_train, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials] if n_specials_first else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    if not spec["specials_first"]:
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken(USER_TOKEN, special=False, normalized=False)])
    if spec["template_bos"]:
        bos = spec["bos"]
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                          special_tokens=[(bos, bos_id)])])
    else:
        tok.post_processor = spec["post"]()
    if spec.get("ignore_merges"):
        j = json.loads(tok.to_str())
        j["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(j))
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size(True)
    tok.save(str(out / f"{pre}.tokenizer.json"), pretty=False)

    # a Hugging Face folder as the family ships it, for llama.cpp's converter logic
    hf = work / f"{pre}-hf"
    hf.mkdir()
    tok.save(str(hf / "tokenizer.json"), pretty=True)
    added = json.loads(tok.to_str())["added_tokens"]
    tc = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in
                                 ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
                                 for a in added},
        "bos_token": spec["bos"], "eos_token": spec["eos"], "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
    }
    if pre == "smollm":
        # The real SmolLM2 template (models/testdata/templates/), which llama.cpp's converter
        # copies into `tokenizer.chat_template`: the GGUF path of chat templates is tested too.
        tc["chat_template"] = (REPO / "models/testdata/templates/HuggingFaceTB-SmolLM2-Instruct.jinja").read_text()
    if spec.get("unk"):
        tc["unk_token"] = spec["unk"]
    if spec.get("pad"):
        tc["pad_token"] = spec["pad"]
    (hf / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB_SIZE}
    for k, t in spec.get("config_ids", {}).items():
        config[k] = tok.token_to_id(t)
    (hf / "config.json").write_text(json.dumps(config, indent=2))

    tokens, toktypes = bpe_gguf_vocab(hf)

    def kvs(w):
        # TextModel._set_vocab_gpt2
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(toktypes)
        special_vocab(hf, load_merges=True).add_to_gguf(w, quiet=True)

    write_gguf(out / f"{pre}.gguf", f"cranegrad tokenizer fixture {pre}", kvs)
    return hf


# ---------------------------------------------------------------------------------------------------
# llama-small vocab
# ---------------------------------------------------------------------------------------------------
def make_llama_small_vocab(shared: Path, out: Path):
    src = shared / "models" / "llama-small-quant" / "model-f32.gguf"
    r = gguf.GGUFReader(str(src))
    arch = None
    kv = []
    for key, field in r.fields.items():
        if key == "general.architecture":
            arch = bytes(field.parts[field.data[0]]).decode()
        if key.startswith("tokenizer."):
            kv.append((key, field))
    w = gguf.GGUFWriter(str(out / "llama-small.vocab.gguf"), arch)
    for key, field in kv:
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]) for i in field.data]
            else:
                val = [field.parts[i].tolist()[0] for i in field.data]
            w.add_key_value(key, val, vtype, sub_type=sub)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(field.parts[field.data[0]]), vtype)
        else:
            w.add_key_value(key, field.parts[field.data[0]].tolist()[0], vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------
def fixture_info(name: str, gguf_path: Path):
    r = gguf.GGUFReader(str(gguf_path))

    def get(key):
        f = r.fields.get(key)
        if f is None:
            return None
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(v).decode()
        return v.tolist()[0]

    toks = r.fields["tokenizer.ggml.tokens"]
    tts = r.fields["tokenizer.ggml.token_type"]
    tokens = [bytes(toks.parts[i]).decode() for i in toks.data]
    types = [tts.parts[i].tolist()[0] for i in tts.data]
    model, pre = get("tokenizer.ggml.model"), get("tokenizer.ggml.pre")
    # what llama.cpp (src/llama-vocab.cpp, llama_vocab::impl::load) makes of these keys: defaults per
    # model/pre, then tokenizer.ggml.add_bos_token / add_eos_token / add_space_prefix override them
    if model == "llama":
        eff = {"add_bos": True, "add_eos": False, "add_space_prefix": True, "clean_spaces": False,
               "ignore_merges": False}
    else:
        eff = {"add_bos": pre == "llama-bpe", "add_eos": False, "add_space_prefix": False,
               "clean_spaces": pre not in ("qwen2", "smollm"), "ignore_merges": pre == "llama-bpe"}
    for k, key in (("add_bos", "tokenizer.ggml.add_bos_token"), ("add_eos", "tokenizer.ggml.add_eos_token"),
                   ("add_space_prefix", "tokenizer.ggml.add_space_prefix")):
        if get(key) is not None:
            eff[k] = bool(get(key))
    return {
        "model": model,
        "pre": pre,
        "n_tokens": len(tokens),
        "bos_id": get("tokenizer.ggml.bos_token_id"),
        "eos_id": get("tokenizer.ggml.eos_token_id"),
        "unk_id": get("tokenizer.ggml.unknown_token_id"),
        "pad_id": get("tokenizer.ggml.padding_token_id"),
        "add_bos_token_key": get("tokenizer.ggml.add_bos_token"),
        "add_eos_token_key": get("tokenizer.ggml.add_eos_token"),
        "llama_cpp_flags": eff,
        "control_tokens": {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3},
        "user_defined_tokens": {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 4},
        "unknown_tokens": {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 2},
    }


def substitute(text: str, subs: dict) -> str | None:
    for k, v in subs.items():
        if "{" + k + "}" in text:
            if v is None:
                return None
            text = text.replace("{" + k + "}", v)
    return text


def hf_results(tok: Tokenizer, text: str):
    tok.encode_special_tokens = False
    with_sp = tok.encode(text, add_special_tokens=True)
    without = tok.encode(text, add_special_tokens=False)
    tok.encode_special_tokens = True
    split = tok.encode(text, add_special_tokens=False)
    tok.encode_special_tokens = False
    return {
        "ids": with_sp.ids,
        "pieces": with_sp.tokens,
        "ids_no_special": without.ids,
        "ids_split_special": split.ids,
        "decode": tok.decode(with_sp.ids, skip_special_tokens=False),
    }


# llama.cpp result field -> the `tokenizers` field it is compared with
LLAMA_CPP_FIELDS = {"ids": "ids", "ids_no_special": "ids_no_special",
                    "ids_no_parse_special": "ids_split_special", "detok": "decode"}
LLAMA_CPP_VERSION = "llama.cpp 0c1e570 (as vendored in the llama-cpp-python 0.3.36 sdist)"


def make_cases(out: Path, fixtures: list[str], versions, llama_cpp: dict | None, previous: dict | None):
    result = {
        "about": "Expected token ids for the GGUF tokenizer fixtures; see models/testdata/README.md "
                 "(section 'tokenizers/') for the schema and how they were made.",
        "versions": versions,
        "fixtures": {},
    }
    for name in fixtures:
        info = fixture_info(name, out / f"{name}.gguf") if name != "llama-small" else \
            fixture_info(name, out / "llama-small.vocab.gguf")
        if name == "llama-small":
            tj = REPO / "models" / "testdata" / "llama-small" / "tokenizer.json"
            info["gguf"] = "llama-small.vocab.gguf"
            info["tokenizer_json"] = "../llama-small/tokenizer.json"
            c1 = c2 = None
        else:
            tj = out / f"{name}.tokenizer.json"
            info["gguf"] = f"{name}.gguf"
            info["tokenizer_json"] = f"{name}.tokenizer.json"
            c1, c2 = (SPM_CONTROL if name == "spm" else BPE_FIXTURES[name]["chat"])
        info["gguf_sha256"] = hashlib.sha256((out / info["gguf"]).read_bytes()).hexdigest()
        tok = Tokenizer.from_file(str(tj))
        id2tok = lambda i: None if i is None else tok.id_to_token(i)
        subs = {"C1": c1, "C2": c2, "C1P": None if c1 is None else c1[:-1],
                "BOS": id2tok(info["bos_id"]), "EOS": id2tok(info["eos_id"]),
                "U": USER_TOKEN if name != "llama-small" else None}
        cases = []
        prev_cases = {}
        if previous and name in previous.get("fixtures", {}):
            prev_cases = {c["name"]: c for c in previous["fixtures"][name]["cases"]}
        prev_info = (previous or {}).get("fixtures", {}).get(name, {})
        # earlier llama.cpp results stay valid only for a byte-identical GGUF
        checked = bool(llama_cpp and name in llama_cpp) or bool(
            prev_info.get("llama_cpp", {}).get("checked") and prev_info.get("gguf_sha256") == info["gguf_sha256"])
        disagreements = []
        for cname, template in CASES:
            if cname == "spm_specials_as_text" and name != "spm":
                continue
            text = substitute(template, subs)
            if text is None:
                continue
            case = {"name": cname, "text": text}
            case.update(hf_results(tok, text))
            if llama_cpp and name in llama_cpp:
                lc = llama_cpp[name][cname]
                assert lc["text"] == text, (name, cname)
                diff = {k: lc[k] for k, hk in LLAMA_CPP_FIELDS.items() if lc[k] != case[hk]}
            elif checked:
                prev = prev_cases.get(cname)
                if prev is None or prev["text"] != text:
                    raise SystemExit(f"{name}/{cname}: no llama.cpp result for a new or changed case; "
                                     "rerun llama.cpp (--llama-cpp-results)")
                # llama.cpp's answer, re-expressed against the (possibly new) tokenizers fields
                full = {k: prev.get("llama_cpp", {}).get(k, prev[hk]) for k, hk in LLAMA_CPP_FIELDS.items()}
                diff = {k: v for k, v in full.items() if v != case[LLAMA_CPP_FIELDS[k]]}
            else:
                diff = None
            if diff is not None:
                case["llama_cpp"] = diff
                if diff:
                    disagreements.append(cname)
            cases.append(case)
        info["llama_cpp"] = {"checked": checked, "version": LLAMA_CPP_VERSION if checked else None,
                             "disagreements": disagreements}
        info["cases"] = cases
        result["fixtures"][name] = info
    return result


def dump_cases(obj) -> str:
    """JSON with one line per case field, small enough to diff and to read."""
    def enc(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = ["{"]
    lines.append(f' "about": {enc(obj["about"])},')
    lines.append(f' "versions": {enc(obj["versions"])},')
    lines.append(' "fixtures": {')
    fx = list(obj["fixtures"].items())
    for fi, (name, info) in enumerate(fx):
        lines.append(f'  {enc(name)}: {{')
        for k, v in info.items():
            if k == "cases":
                continue
            lines.append(f'   {enc(k)}: {enc(v)},')
        lines.append('   "cases": [')
        for ci, case in enumerate(info["cases"]):
            lines.append('    {')
            items = list(case.items())
            for ki, (k, v) in enumerate(items):
                lines.append(f'     {enc(k)}: {enc(v)}' + ("," if ki < len(items) - 1 else ""))
            lines.append('    }' + ("," if ci < len(info["cases"]) - 1 else ""))
        lines.append('   ]')
        lines.append('  }' + ("," if fi < len(fx) - 1 else ""))
    lines.append(' }')
    lines.append('}')
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(obj))
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="the project's shared/ folder (data/shakespeare, models/llama-small-quant)")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "testdata" / "tokenizers")
    ap.add_argument("--llama-cpp-results", type=Path, default=None)
    ap.add_argument("--keep-work", type=Path, default=None,
                    help="also copy the intermediate Hugging Face folders here")
    args = ap.parse_args()
    versions = check_versions()
    versions["python"] = sys.version.split()[0]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    previous = None
    if (out / "cases.json").exists():
        previous = json.loads((out / "cases.json").read_text(encoding="utf-8"))
    llama_cpp = json.loads(args.llama_cpp_results.read_text(encoding="utf-8")) if args.llama_cpp_results else None

    lines = training_lines(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_spm(lines, out, work)
        for pre in BPE_FIXTURES:
            make_bpe(pre, lines, out, work)
        if args.keep_work:
            if args.keep_work.exists():
                shutil.rmtree(args.keep_work)
            shutil.copytree(work, args.keep_work)
    make_llama_small_vocab(args.shared, out)
    fixtures = ["spm"] + list(BPE_FIXTURES) + ["llama-small"]
    cases = make_cases(out, fixtures, versions, llama_cpp, previous)
    (out / "cases.json").write_text(dump_cases(cases), encoding="utf-8")
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:8d}  {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")


if __name__ == "__main__":
    main()
