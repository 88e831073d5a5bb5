#!/usr/bin/env python3
"""Write a LLaMA model with the shape of SmolLM-135M and random weights, as an HF folder and a GGUF.

For side-by-side benchmarks only (cranegrad against llama.cpp's llama-bench and PyTorch). The
weights are random, so the model computes nothing useful, but every matrix has SmolLM-135M's
shape: LlamaForCausalLM, hidden 576, 30 layers, 9 attention heads, 3 KV heads (head_dim 64),
intermediate 1536 (SiLU MLP), vocab 49152, tied embeddings, rope_theta 100000, rms_norm_eps 1e-5,
max_position_embeddings 8192, no biases, BOS 1 / EOS 2. About 134.5M parameters.

Output:
  OUT_DIR/hf/config.json              transformers LlamaConfig (v5 `rope_parameters`/`dtype` and
                                      the older `rope_theta`/`torch_dtype` keys, same values)
  OUT_DIR/hf/generation_config.json   bos/eos
  OUT_DIR/hf/model.safetensors        float32, HF tensor names, no lm_head (tied). Byte-identical
                                      to `safetensors.numpy.save_file(tensors, path,
                                      metadata={"format": "pt"})` but written tensor by tensor.
  OUT_DIR/model-f32.gguf              the same weights as llama.cpp's convert_hf_to_gguf.py
                                      (LlamaModel) writes them at --outtype f32: llama.cpp names,
                                      attn_q/attn_k rows permuted (LlamaModel.permute), no
                                      output.weight (tied), llama.* metadata, general.file_type 0,
                                      and a placeholder SentencePiece-style `llama` vocabulary of
                                      49152 tokens (<unk> <s> </s>, <0x00>..<0xFF>, then
                                      `▁tokN` fillers) so that llama.cpp's loader accepts the
                                      file. It is not a real tokenizer: benchmark with token ids.

Weights: np.random.default_rng(seed).standard_normal(shape, dtype=float32), drawn in
LlamaForCausalLM.named_parameters() order (embed_tokens; per layer q, k, v, o, gate, up, down,
input_layernorm, post_attention_layernorm; norm); 1-D norm gains 1 + 0.1*randn, all other
tensors 0.02*randn. Deterministic: the same seed and --layers give byte-identical files.
Both files are written one tensor at a time: peak RSS about 160 MB at full size (the largest
tensor, the 113 MB embedding), not the whole 540 MB model.

Usage (numpy, gguf and safetensors; transformers optional, only for --verify's config check):
  /work/pyenv/bin/python scripts/make_smollm_shape.py OUT_DIR [--seed N] [--layers L] [--verify]

--layers L overrides the 30 layers (e.g. 2 for a quick test). --verify reads both files back and
checks them against each other (GGUF shapes and metadata, un-permuted attn_q/attn_k equal to
q_proj/k_proj, every other tensor equal, safetensors bytes equal to save_file's) and the config
through transformers' LlamaConfig if transformers is installed.

Time at full size (30 layers, 2 x 540 MB written): about 4 s on a 2-core machine (measured 3.7 s
into a page-cached /tmp; a slow disk adds its write time). --verify adds about 12 s and needs
about 2.2 GB of memory (it holds the safetensors model and save_file's copy of it).
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np

import gguf

# SmolLM-135M (HuggingFaceTB/SmolLM-135M config.json).
HIDDEN = 576
N_LAYERS = 30
N_HEAD = 9
N_HEAD_KV = 3
HEAD_DIM = HIDDEN // N_HEAD  # 64
INTERMEDIATE = 1536
VOCAB = 49152
ROPE_THETA = 100000.0
RMS_EPS = 1e-5
MAX_POS = 8192
BOS, EOS, UNK = 1, 2, 0

NAME = "SmolLM-135M-shape (random weights)"


def hf_tensors(n_layers):
    """(hf_name, shape) in LlamaForCausalLM.named_parameters() order: the draw order."""
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    kv = N_HEAD_KV * HEAD_DIM
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (N_HEAD * HEAD_DIM, HIDDEN)),
            (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, N_HEAD * HEAD_DIM)),
            (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    out.append(("model.norm.weight", (HIDDEN,)))
    return out


GGUF_SUFFIX = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_name(hf_name):
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{GGUF_SUFFIX[rest]}"


def permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half row order -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def unpermute(w, n_head):
    """Inverse of permute (interleaved -> HF rotate_half order)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def to_gguf(hf_name, w):
    if hf_name.endswith("q_proj.weight"):
        return np.ascontiguousarray(permute(w, N_HEAD, N_HEAD))
    if hf_name.endswith("k_proj.weight"):
        return np.ascontiguousarray(permute(w, N_HEAD, N_HEAD_KV))
    return w


def draw(rng, shape):
    w = rng.standard_normal(shape, dtype=np.float32)
    if len(shape) == 1:
        w *= np.float32(0.1)
        w += np.float32(1.0)
    else:
        w *= np.float32(0.02)
    return w


# ---------------------------------------------------------------- Hugging Face folder

def hf_config(n_layers):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS,
        "dtype": "float32",
        "eos_token_id": EOS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": N_HEAD,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": N_HEAD_KV,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_theta": ROPE_THETA, "rope_type": "default"},
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
}


def safetensors_layout(tensors):
    """Header bytes and per-name data offsets exactly as safetensors' save_file lays them out:
    tensors sorted by (dtype alignment, name) -- all F32 here, so by name --, compact JSON with
    __metadata__ first, header padded with spaces to a multiple of 8."""
    offsets = {}
    header = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape in sorted(tensors, key=lambda t: t[0].encode()):
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + n]}
        offsets[name] = pos
        pos += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb, offsets, pos


# ---------------------------------------------------------------- GGUF

def gguf_vocab():
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [
        gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    first = len(tokens)
    for i in range(first, VOCAB):
        tokens.append(f"\u2581tok{i}")
        scores.append(-float(i - first))
        types.append(gguf.TokenType.NORMAL)
    assert len(tokens) == VOCAB
    return tokens, scores, types


def gguf_metadata(w, n_layers):
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(NAME)
    w.add_block_count(n_layers)
    w.add_context_length(MAX_POS)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = gguf_vocab()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(UNK)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


# ---------------------------------------------------------------- writing

def write(out_dir, seed, n_layers):
    hf_dir = os.path.join(out_dir, "hf")
    os.makedirs(hf_dir, exist_ok=True)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(hf_config(n_layers), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(hf_dir, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2, sort_keys=True)
        f.write("\n")

    tensors = hf_tensors(n_layers)
    st_path = os.path.join(hf_dir, "model.safetensors")
    gguf_path = os.path.join(out_dir, "model-f32.gguf")

    header, offsets, data_len = safetensors_layout(tensors)
    gw = gguf.GGUFWriter(gguf_path, "llama")
    gguf_metadata(gw, n_layers)
    for name, shape in tensors:
        gw.add_tensor_info(gguf_name(name), shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    n_params = 0
    with open(st_path, "wb") as st:
        st.write(header)
        st.truncate(len(header) + data_len)
        for name, shape in tensors:
            w = draw(rng, shape)
            n_params += w.size
            st.seek(len(header) + offsets[name])
            w.tofile(st)
            gw.write_tensor_data(to_gguf(name, w))
            del w
    gw.close()
    return st_path, gguf_path, n_params


# ---------------------------------------------------------------- verification

def verify(out_dir, seed, n_layers):
    from safetensors import safe_open
    from safetensors.numpy import save

    hf_dir = os.path.join(out_dir, "hf")
    st_path = os.path.join(hf_dir, "model.safetensors")
    gguf_path = os.path.join(out_dir, "model-f32.gguf")
    tensors = hf_tensors(n_layers)

    # The HF config as transformers reads it (no torch needed for the config class).
    try:
        from transformers import GenerationConfig, LlamaConfig
    except ImportError:
        print("verify: transformers not installed, config not checked")
    else:
        c = LlamaConfig.from_pretrained(hf_dir)
        theta = getattr(c, "rope_theta", None)
        if theta is None:
            theta = c.rope_parameters["rope_theta"]
        got = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
               c.head_dim, c.intermediate_size, c.vocab_size, c.max_position_embeddings,
               c.rms_norm_eps, theta, c.tie_word_embeddings, c.hidden_act, c.bos_token_id,
               c.eos_token_id)
        want = (HIDDEN, n_layers, N_HEAD, N_HEAD_KV, HEAD_DIM, INTERMEDIATE, VOCAB, MAX_POS,
                RMS_EPS, ROPE_THETA, True, "silu", BOS, EOS)
        assert got == want, (got, want)
        g = GenerationConfig.from_pretrained(hf_dir)
        assert (g.bos_token_id, g.eos_token_id) == (BOS, EOS)
        print("verify: transformers LlamaConfig/GenerationConfig read back the SmolLM-135M shape")

    # safetensors: names/shapes, and the file is what save_file would write. Tensors are read
    # one at a time except for that last check, which holds the model (~2x its size) in memory.
    with safe_open(st_path, framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(n for n, _ in tensors)
        for name, shape in tensors:
            assert f.get_slice(name).get_shape() == list(shape), name
        all_st = {name: f.get_tensor(name) for name, _ in tensors}
    with open(st_path, "rb") as fh:
        assert fh.read() == save(all_st, metadata={"format": "pt"}), "differs from save_file"
    print("verify: model.safetensors is byte-identical to safetensors.numpy.save_file's output")

    # Redraw from the seed: the file holds exactly the recipe's values.
    rng = np.random.default_rng(seed)
    for name, shape in tensors:
        assert np.array_equal(all_st[name], draw(rng, shape)), name
    print("verify: safetensors values equal a fresh draw from the seed")

    # GGUF against safetensors.
    r = gguf.GGUFReader(gguf_path)

    def kv(key):
        field = r.fields[key]
        return field.contents()

    want_kv = {
        "general.architecture": "llama",
        "general.name": NAME,
        "general.file_type": 0,
        "llama.context_length": MAX_POS,
        "llama.embedding_length": HIDDEN,
        "llama.block_count": n_layers,
        "llama.feed_forward_length": INTERMEDIATE,
        "llama.rope.dimension_count": HEAD_DIM,
        "llama.attention.head_count": N_HEAD,
        "llama.attention.head_count_kv": N_HEAD_KV,
        "llama.attention.key_length": HEAD_DIM,
        "llama.attention.value_length": HEAD_DIM,
        "llama.vocab_size": VOCAB,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": BOS,
        "tokenizer.ggml.eos_token_id": EOS,
        "tokenizer.ggml.unknown_token_id": UNK,
        "tokenizer.ggml.add_bos_token": True,
    }
    for key, want in want_kv.items():
        assert kv(key) == want, (key, kv(key), want)
    assert np.isclose(kv("llama.attention.layer_norm_rms_epsilon"), RMS_EPS)
    assert kv("llama.rope.freq_base") == ROPE_THETA
    toks = kv("tokenizer.ggml.tokens")
    ttypes = kv("tokenizer.ggml.token_type")
    assert len(toks) == VOCAB == len(ttypes) == len(kv("tokenizer.ggml.scores"))
    assert toks[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and toks[258] == "<0xFF>"
    assert ttypes[:4] == [2, 3, 3, 6] and ttypes[259] == 1 and len(set(toks)) == VOCAB

    by_name = {t.name: t for t in r.tensors}
    assert sorted(by_name) == sorted(gguf_name(n) for n, _ in tensors)
    assert "output.weight" not in by_name
    for name, shape in tensors:
        t = by_name[gguf_name(name)]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        # GGUF lists dims innermost first (ggml ne): reversed numpy shape.
        assert [int(d) for d in t.shape] == list(reversed(shape)), (name, t.shape, shape)
        g = np.asarray(t.data).reshape(shape)
        ref = all_st[name]
        if name.endswith("q_proj.weight"):
            assert not np.array_equal(g, ref)  # really permuted
            g = unpermute(g, N_HEAD)
        elif name.endswith("k_proj.weight"):
            assert not np.array_equal(g, ref)
            g = unpermute(g, N_HEAD_KV)
        assert np.array_equal(g, ref), name
    print(f"verify: GGUF metadata, vocab ({VOCAB} tokens) and {len(tensors)} tensor shapes ok; "
          "un-permuted attn_q/attn_k equal q_proj/k_proj, token_embd equals embed_tokens, "
          "all other tensors equal")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=N_LAYERS)
    ap.add_argument("--verify", action="store_true", help="read both files back and check them")
    args = ap.parse_args()
    if args.layers < 1:
        ap.error("--layers must be at least 1")

    t0 = time.time()
    st_path, gguf_path, n_params = write(args.out_dir, args.seed, args.layers)
    dt = time.time() - t0
    for p in (os.path.join(args.out_dir, "hf", "config.json"),
              os.path.join(args.out_dir, "hf", "generation_config.json"), st_path, gguf_path):
        print(f"wrote {p} ({os.path.getsize(p):,} bytes)")
    print(f"{args.layers} layers, seed {args.seed}: {n_params:,} parameters "
          f"({n_params / 1e6:.1f}M, embeddings tied) in {dt:.1f} s")
    if args.verify:
        verify(args.out_dir, args.seed, args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
