#!/usr/bin/env python3
"""Write the expected chat-template renderings in models/testdata/templates/.

Every (template, messages, add_generation_prompt) case is rendered exactly as Hugging Face
transformers' `apply_chat_template(..., tokenize=False)` renders it: through
`transformers.utils.chat_template_utils.render_jinja_template` (the function apply_chat_template
calls), and cross-checked against `PreTrainedTokenizerFast.apply_chat_template` itself. A case whose
template calls `raise_exception(...)` records the message instead of an output.

Output (deterministic; running it twice gives identical files):
  models/testdata/templates/expected/<template>__<messages>__<gen|nogen>[__<variant>].txt
      raw UTF-8 bytes of the rendering, nothing added
  models/testdata/templates/cases.json
      [{"template", "messages", "add_generation_prompt", "bos_token", "eos_token", "extra",
        "expected", "error"}, ...]

Needs python with transformers and jinja2 (no torch), e.g. a venv outside the repository:
  python3 -m venv /work/pyenv && /work/pyenv/bin/pip install transformers jinja2 tokenizers
  /work/pyenv/bin/python scripts/make_template_fixtures.py
"""

import json
import logging
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, "models", "testdata", "templates")
MESSAGES_DIR = os.path.join(DIR, "messages")
EXPECTED_DIR = os.path.join(DIR, "expected")

# The versions the committed fixtures were made with (see models/testdata/templates/README.md).
MADE_WITH = {"transformers": "5.25.0", "jinja2": "3.1.6"}

# Llama 3.x: with no `date_string` the 3.2 template calls strftime_now("%d %b %Y") (today's date);
# passing it makes the rendering deterministic. 3.1's template defaults to the same string anyway.
LLAMA_EXTRA = {"date_string": "26 Jul 2024"}

# template file -> bos/eos as in that model's tokenizer_config.json (None = null there), extra
# template variables for every case, and extra variants (suffix -> variables, messages, gen values).
TEMPLATES = [
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", LLAMA_EXTRA, {}),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", LLAMA_EXTRA, {}),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>", {}, {}),
    (
        "Qwen-Qwen3-0.6B.jinja",
        None,
        "<|im_end|>",
        {},
        {"enable_thinking-false": ({"enable_thinking": False}, ["user_only", "think"], [True])},
    ),
    ("HuggingFaceTB-SmolLM2-Instruct.jinja", "<|im_start|>", "<|im_end|>", {}, {}),
    ("mistralai-Mistral-7B-Instruct-v0.2.jinja", "<s>", "</s>", {}, {}),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>", {}, {}),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>", {}, {}),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>", {}, {}),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",
        {},
        {},
    ),
    (
        "deepseek-ai-deepseek-coder-33b-instruct.jinja",
        "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        "<|EOT|>",
        {},
        {},
    ),
    ("moonshotai-Kimi-K2.jinja", "[BOS]", "[EOS]", {}, {}),
]

MESSAGES = [
    "sys_multiturn",
    "user_only",
    "no_system",
    "jinja_like",
    "consecutive_users",
    "think",
    "ws_edge",
]


def quiet_imports():
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import jinja2
    import tokenizers
    import transformers
    from transformers import PreTrainedTokenizerFast
    from transformers.utils.chat_template_utils import render_jinja_template

    return jinja2, tokenizers, transformers, PreTrainedTokenizerFast, render_jinja_template


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def main():
    jinja2, tokenizers, transformers, PreTrainedTokenizerFast, render_jinja_template = quiet_imports()
    versions = {"transformers": transformers.__version__, "jinja2": jinja2.__version__}
    print(f"transformers {versions['transformers']}, jinja2 {versions['jinja2']}, tokenizers {tokenizers.__version__}")
    if versions != MADE_WITH:
        print(f"warning: the committed fixtures were made with {MADE_WITH}", file=sys.stderr)

    def make_tokenizer(bos, eos):
        # A tiny word-level tokenizer: only its special tokens matter to apply_chat_template.
        vocab = {"[UNK]": 0}
        for tok in (bos, eos):
            if tok is not None and tok not in vocab:
                vocab[tok] = len(vocab)
        model = tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]")
        tok = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer(model), bos_token=bos, eos_token=eos)
        assert tok.special_tokens_map == {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
        return tok

    messages = {}
    for name in MESSAGES:
        messages[name] = json.loads(read_text(os.path.join(MESSAGES_DIR, name + ".json")))

    os.makedirs(EXPECTED_DIR, exist_ok=True)
    cases = []
    written = set()
    for template_file, bos, eos, extra, variants in TEMPLATES:
        template = read_text(os.path.join(DIR, template_file))
        stem = template_file[: -len(".jinja")]
        if bos is None:
            # The model's tokenizer_config has bos_token null, so transformers leaves bos_token
            # undefined; the manifest says "" for it, which is the same as long as the template
            # never reads it.
            assert "bos_token" not in template, template_file
        tokenizer = make_tokenizer(bos, eos)

        plan = [(None, extra, MESSAGES, [True, False])]
        for suffix, (variables, msg_names, gens) in variants.items():
            plan.append((suffix, {**extra, **variables}, msg_names, gens))
        for suffix, variables, msg_names, gens in plan:
            for msg_name in msg_names:
                for gen in gens:
                    msgs = messages[msg_name]
                    special = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
                    output = error = None
                    try:
                        rendered, _ = render_jinja_template(
                            conversations=[msgs],
                            chat_template=template,
                            add_generation_prompt=gen,
                            **special,
                            **variables,
                        )
                        output = rendered[0]
                    except jinja2.exceptions.TemplateError as e:
                        # Only raise_exception(...) raises a bare TemplateError; anything else
                        # (undefined, syntax, security) is a bug in this script or the template.
                        if type(e) is not jinja2.exceptions.TemplateError:
                            raise
                        error = str(e)
                    # The same through the tokenizer's own apply_chat_template.
                    try:
                        via_tokenizer = tokenizer.apply_chat_template(
                            msgs, chat_template=template, add_generation_prompt=gen, tokenize=False, **variables
                        )
                        assert error is None and via_tokenizer == output, (template_file, msg_name, gen)
                    except jinja2.exceptions.TemplateError as e:
                        assert str(e) == error, (template_file, msg_name, gen, str(e), error)

                    expected = None
                    if error is None:
                        expected = f"{stem}__{msg_name}__{'gen' if gen else 'nogen'}"
                        if suffix:
                            expected += f"__{suffix}"
                        expected += ".txt"
                        with open(os.path.join(EXPECTED_DIR, expected), "wb") as f:
                            f.write(output.encode("utf-8"))
                        written.add(expected)
                    cases.append(
                        {
                            "template": template_file,
                            "messages": f"messages/{msg_name}.json",
                            "add_generation_prompt": gen,
                            "bos_token": bos if bos is not None else "",
                            "eos_token": eos,
                            "extra": variables,
                            "expected": f"expected/{expected}" if expected else None,
                            "error": error,
                        }
                    )

    for stale in sorted(set(os.listdir(EXPECTED_DIR)) - written):
        if stale.endswith(".txt"):
            os.remove(os.path.join(EXPECTED_DIR, stale))
    with open(os.path.join(DIR, "cases.json"), "w", encoding="utf-8", newline="\n") as f:
        # One case a line, so that a diff shows which cases changed.
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")

    n_err = sum(1 for c in cases if c["error"] is not None)
    print(f"{len(cases)} cases: {len(cases) - n_err} renderings, {n_err} expected errors")
    for c in cases:
        if c["error"] is not None:
            gen = "gen" if c["add_generation_prompt"] else "nogen"
            print(f"  error  {c['template']}  {c['messages']}  {gen}: {c['error']}")


if __name__ == "__main__":
    main()
