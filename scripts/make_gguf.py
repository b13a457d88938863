"""Write a sentence-transformers BERT folder (all-MiniLM-L6-v2) as an F32 GGUF.

    python make_gguf.py MODEL_DIR OUT.gguf [NAME]

What llama.cpp's convert_hf_to_gguf.py (BertModel, conversion/bert.py) writes
for a BertModel checkpoint, without torch or transformers: the tensors of
model.safetensors under gguf-py's BERT names (position_ids and any pooler or
MLM head left out), F32; the hyperparameters from config.json; the WordPiece
vocabulary from tokenizer.json in llama.cpp's "phantom space" form (a "##"
continuation loses its "##", every other non-control token gets a leading
U+2581, control tokens stay as they are); the special token ids and the
add-[CLS]/[SEP] flags through gguf.SpecialVocab, as the converter does; and
the pooling type from the sentence-transformers Pooling module (mean for
MiniLM). Needs numpy, safetensors and gguf.
"""

import json
import logging
import os
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

# What the converter's tokenizer hash (convert_hf_to_gguf.py,
# get_vocab_base_pre) names the bert-base-uncased WordPiece vocabulary that
# MiniLM shares with bge-small-en-v1.5; llama.cpp ignores the pre-tokenizer
# name for WPM vocabularies.
TOKENIZER_PRE = "jina-v2-en"

POOLING = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
    "pooling_mode_lasttoken": gguf.PoolingType.LAST,
}


def fail(msg):
    sys.exit(f"make_gguf.py: {msg}")


def pooling_type(model_dir):
    modules = json.loads((model_dir / "modules.json").read_text())
    for mod in modules:
        if mod["type"].endswith("Pooling"):
            cfg = json.loads((model_dir / mod["path"] / "config.json").read_text())
            for key, kind in POOLING.items():
                if cfg.get(key):
                    return kind
            fail(f"pooling in {mod['path']}/config.json is not mean, cls or last token")
    fail(f"no Pooling module in {model_dir / 'modules.json'}")


def vocab(model_dir, n_vocab):
    """Tokens and token types as get_vocab_base + BertModel.set_vocab make them."""
    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tok["model"]["type"] != "WordPiece":
        fail(f"tokenizer.json holds a {tok['model']['type']} model, not WordPiece")
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    if max(by_id) >= n_vocab:
        fail(f"token id {max(by_id)} is outside vocab_size {n_vocab}")
    tokens, types = [], []
    for i in range(n_vocab):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            # Added tokens: CONTROL when special, USER_DEFINED otherwise; both
            # are stored as they are.
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def main():
    if len(sys.argv) not in (3, 4):
        fail("usage: make_gguf.py MODEL_DIR OUT.gguf [NAME]")
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) == 4 else model_dir.name
    hp = json.loads((model_dir / "config.json").read_text())
    if hp.get("model_type") != "bert":
        fail(f"config.json says model_type {hp.get('model_type')!r}, not 'bert'")
    n_layer = hp["num_hidden_layers"]
    arch = gguf.MODEL_ARCH.BERT

    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(name)
    # TextModel.set_gguf_parameters
    w.add_block_count(n_layer)
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp["num_attention_heads"])
    w.add_layer_norm_eps(hp["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # BertModel.set_gguf_parameters
    w.add_causal_attention(False)
    w.add_pooling_type(pooling_type(model_dir))
    # BertModel.set_vocab
    tokens, types = vocab(model_dir, hp["vocab_size"])
    w.add_token_type_count(hp.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre(TOKENIZER_PRE)
    w.add_token_list(tokens)
    w.add_token_types(types)
    # (It warns that GGUF has no key for [CLS]; BERT's [CLS] is the BOS id,
    # which llama.cpp puts first, as the converter leaves it.)
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)

    # BertModel.filter_tensors + map_tensor_name
    names = gguf.get_tensor_name_map(arch, n_layer)
    skip = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
    for name, data in load_file(str(model_dir / "model.safetensors")).items():
        if name.startswith("bert."):
            name = name[5:]
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        if name.endswith(".beta"):
            name = name[:-5] + ".bias"
        if name in skip or name.startswith("cls."):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            fail(f"no GGUF name for tensor {name}")
        w.add_tensor(new, np.ascontiguousarray(data, dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
