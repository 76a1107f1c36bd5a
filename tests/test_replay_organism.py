"""Independent replay of an organism run: plain ``transformers`` + torch hooks recompute, prompt
by prompt, what the run reports — clean accuracy, the all-heads FV rows (the run's own means
added to the residual stream after the injection layer's attention) and necessity (main heads'
z replaced by the train-task mean z̄ at the o_proj input). Nothing below imports addk_interp
except to start the run; the replay reads only the run directory's files and the shipped
checkpoint.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "addk_interp" / "organism" / "checkpoint"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from addk_interp.pipeline.run import PRESETS, Run, RunConfig

    out = tmp_path_factory.mktemp("replay") / "run"
    cfg = RunConfig(model="organism", preset="default", **PRESETS["default"])
    Run(cfg, out).execute()
    return out


@pytest.fixture(scope="module")
def hf():
    tok = AutoTokenizer.from_pretrained(str(CKPT))
    model = LlamaForCausalLM.from_pretrained(str(CKPT), dtype=torch.float32).eval()
    model.set_attn_implementation("eager")
    return model, tok


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def _tasks(meta):
    for v in meta.values():
        try:
            d = json.loads(v)
        except (TypeError, ValueError):
            continue
        if isinstance(d, dict) and "tasks" in d:
            return d["tasks"]
    return json.loads(meta["tasks"])


def _correct(model, tok, prompt, answer, edits=()):
    """Teacher-forced exact match: argmax at the query = the answer token and the argmax after
    it does not continue the number (the organism's numbers are single tokens)."""
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    ans = tok(answer, add_special_tokens=False)["input_ids"]
    assert len(ans) == 1
    q = len(ids) - 1
    x = torch.tensor([ids + ans])
    handles = [e(model, q) for e in edits]
    try:
        with torch.no_grad():
            logits = model(x).logits[0]
    finally:
        for h in handles:
            h.remove()
    first, nxt = int(logits[q].argmax()), int(logits[q + 1].argmax())
    text = tok.decode([nxt], skip_special_tokens=True)
    return first == ans[0] and not (text and text[0].isalnum())


def _add_after_attention(layer, v):
    def install(model, q):
        def fn(mod, inp, out):
            h = out[0].clone()
            h[:, q] += v
            return (h, *out[1:])

        return model.model.layers[layer].self_attn.register_forward_hook(fn)

    return install


def _replace_heads(layer, heads, zbar, n_heads, d_head):
    def install(model, q):
        def pre(mod, args):
            x = args[0].clone()
            z = x.view(x.shape[0], x.shape[1], n_heads, d_head)
            for h in heads:
                z[:, q, h] = zbar[layer, h]
            return (z.view(x.shape[0], x.shape[1], -1),)

        return model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre)

    return install


def test_clean_accuracy_replays(run_dir, hf):
    model, tok = hf
    df = pd.read_csv(run_dir / "stages" / "clean_eval" / "examples.csv", dtype={"answer": str})
    got = [_correct(model, tok, p, a) for p, a in zip(df["prompt"], df["answer"])]
    assert got == df["correct"].tolist()


def test_fv_rows_replay_as_a_residual_stream_add(run_dir, hf):
    model, tok = hf
    st = run_dir / "stages"
    df = pd.read_csv(st / "fv_eval" / "fv_examples.csv", dtype={"answer": str})
    layer = int(pd.read_csv(st / "fv_eval" / "fv_summary.csv")["layer"].iloc[0])
    df = df[df["condition"] == "all_heads_unit"]
    assert len(df) > 0
    n = 0
    for split in ("train", "heldout"):
        t, meta = _tensors(st / "capture" / f"means_{split}.safetensors")
        tasks = _tasks(meta)
        for _, r in df[df["split"] == split].iterrows():
            fv = t["means"][tasks.index(r["task"])].sum(dim=(0, 1))
            ok = _correct(model, tok, r["prompt"], r["answer"], [_add_after_attention(layer, fv)])
            assert ok == bool(r["correct"]), (split, r["task"], r["query"])
            n += 1
    assert n == len(df)


def test_necessity_replays_per_prompt(run_dir, hf):
    model, tok = hf
    st = run_dir / "stages"
    nec = json.loads((st / "headsets" / "necessity.json").read_text())
    meta = nec["meta"]
    t, tmeta = _tensors(st / "capture" / "means_train.safetensors")
    tasks = _tasks(tmeta)
    idx = [tasks.index(x) for x in meta["train_tasks"]]
    zbar = t["z_means"][idx].double().mean(0).float()
    cfg = model.config
    main = [tuple(h) for h in nec["main"]]
    assert main, "the organism run has main heads to ablate"
    by_layer = {}
    for la, h in main:
        by_layer.setdefault(la, []).append(h)
    edits = [
        _replace_heads(la, hs, zbar, cfg.num_attention_heads, cfg.head_dim)
        for la, hs in by_layer.items()
    ]
    got = "".join(
        "1" if _correct(model, tok, p, a, edits) else "0"
        for p, a in zip(meta["prompts"], meta["answers"])
    )
    assert got == meta["main_outcomes"]
    clean = "".join(
        "1" if _correct(model, tok, p, a) else "0" for p, a in zip(meta["prompts"], meta["answers"])
    )
    assert clean == meta["clean_outcomes"]
