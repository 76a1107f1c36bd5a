"""Tasks, prompt rendering/tokenization, scoring, and CLI bad-input handling (tiny models)."""

import json

import pytest
import torch
from conftest import tiny

from addk_interp.cli.main import main
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode, encode_examples, make_batches
from addk_interp.core.scoring import (
    RowScorer,
    accuracy_table,
    continuation_mask,
    evaluate,
    parse_leading_int,
    scores_from_logits,
)
from addk_interp.core.tasks import (
    FORMATS,
    Example,
    arithmetic_family,
    json_family,
    parse_k_range,
    render,
    sample_examples,
    sample_family,
)
from addk_interp.models.adapter import kv_head_index
from addk_interp.models.loading import load_model


def test_paper_split_and_families():
    fam = arithmetic_family("add")
    assert len(fam.tasks) == 30 and set(fam.heldout) == {f"add{k}" for k in (20, 2, 27, 16, 21)}
    assert len(fam.train) == 25 and not set(fam.train) & set(fam.heldout)
    assert fam.tasks["add7"].output("93") == "100"
    assert arithmetic_family("sub").tasks["sub5"].output("3") == "-2"
    assert arithmetic_family("mul").tasks["mul30"].output("100") == "3000"
    with pytest.raises(AddkError, match="outside the add family"):
        arithmetic_family("add", ks=[31])
    with pytest.raises(AddkError, match="unknown task family"):
        arithmetic_family("div")
    assert parse_k_range("1-3,5") == [1, 2, 3, 5]
    assert parse_k_range("-5--3") == [-5, -4, -3]


def test_sampling_deterministic_and_once_per_pass():
    t = arithmetic_family("add", ks=[3]).tasks["add3"]
    a = sample_examples(t, 100, 5, seed=42, kind="activation")
    b = sample_examples(t, 100, 5, seed=42, kind="activation")
    c = sample_examples(t, 100, 5, seed=42, kind="final_eval")
    assert a == b and a != c
    assert sorted(int(e.query) for e in a) == list(range(1, 101))
    for e in a:
        xs = [x for x, _ in e.demos]
        assert len(set(xs)) == 5 and e.query not in xs
        assert all(int(y) == int(x) + 3 for x, y in e.demos)
    with pytest.raises(AddkError, match="shots need"):
        sample_examples(t, 5, 100, seed=0, kind="x")
    with pytest.raises(AddkError, match="positive"):
        sample_examples(t, 0, 5, seed=0, kind="x")


def test_render_spans_exact():
    e = Example("add3", 3, (("12", "15"), ("7", "10")), "40", "43")
    p = render(e, "arrow")
    assert p.text == "12->15#7->10#40->"
    groups = {g: p.text[a:b] for g, a, b in p.spans}
    assert groups["demo0_output"] == "15" and groups["demo1_sep"] == "#"
    assert groups["query_input"] == "40" and groups["query_arrow"] == "->"
    q = render(e, "qa")
    assert q.text.startswith("Question:12\nAnswer:15\n\nQuestion:7")
    assert set(FORMATS) == {"arrow", "qa", "io", "ab", "textlabel", "fx"}


def test_encode_groups_and_answer_tokens():
    model = tiny("tiny-llama")
    e = Example("add3", 3, (("12", "15"),), "40", "43")
    enc = encode(model, render(e))
    tok = model.tokenizer
    assert enc.groups[0] == "bos"
    assert tok.decode(list(enc.answer_ids)) == "43"
    labels = [t for t, g in zip(enc.prompt_ids, enc.groups) if g == "demo0_output"]
    assert tok.decode(labels) == "15"


def test_separator_merge_refused(tmp_path):
    """A tokenizer that merges '5#' (answer + separator) must make encode refuse the prompt."""
    from types import SimpleNamespace

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<unk>": 1, "5#": 2, "->": 3}
    for ch in "0123456789->#":
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"5#|->|."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", unk_token="<unk>")
    fake = SimpleNamespace(tokenizer=tok, bos_id=lambda: 0, info=SimpleNamespace(n_ctx=512))
    ok = encode(fake, render(Example("t", None, (), "3", "4"), "arrow"))
    assert tok.decode(list(ok.answer_ids)) == "4"
    with pytest.raises(AddkError, match="separators merge"):
        encode(fake, render(Example("t", None, (), "3", "15"), "arrow"))
    # a demo label merging with its separator is fine (it only changes token groups)
    enc = encode(fake, render(Example("t", None, (("2", "5"),), "3", "4"), "arrow"))
    assert "demo0_output" in enc.groups


def test_unknown_token_refused():
    model = tiny("tiny-llama")
    with pytest.raises(AddkError, match="cannot represent"):
        encode(model, render(Example("t", None, (), "4", "5€"), "arrow"))


def test_context_length_refused():
    model = tiny("tiny-llama")
    t = arithmetic_family("add", ks=[1]).tasks["add1"]
    e = sample_examples(t, 1, 99, seed=0, kind="x")[0]
    with pytest.raises(AddkError, match="exceeds the model's context"):
        encode(model, render(e))


def test_terminator_check_and_multi_token():
    model = tiny("tiny-llama")
    tok = model.tokenizer
    ans = torch.tensor([tok.convert_tokens_to_ids(list("36"))])
    vocab = model.info.d_vocab
    logits = torch.full((1, 3, vocab), -10.0)
    logits[0, 0, ans[0, 0]] = 5
    logits[0, 1, ans[0, 1]] = 5
    five = tok.convert_tokens_to_ids("5")
    logits[0, 2, five] = 5  # model would continue with '5' -> "365"
    sc = scores_from_logits(model, logits, ans)
    assert bool(sc.match[0]) and not bool(sc.terminated[0]) and not bool(sc.correct[0])
    logits[0, 2, five] = -10
    logits[0, 2, tok.convert_tokens_to_ids("#")] = 5
    sc = scores_from_logits(model, logits, ans)
    assert bool(sc.correct[0])
    logits[0, 1, ans[0, 1]] = -10  # second token wrong -> not correct (not first-token scoring)
    assert not bool(scores_from_logits(model, logits, ans).correct[0])
    assert continuation_mask(model)[five] and not continuation_mask(model)[tok.bos_token_id]
    assert parse_leading_int(" -17#") == -17 and parse_leading_int("#") is None


def test_evaluate_and_table_every_example_kept():
    model = tiny("tiny-llama-gqa")
    fam = arithmetic_family("add", ks=[1, 2])
    ex = sample_family(fam, fam.tasks, 7, 2, seed=0, kind="t")
    df = evaluate(model, ex, batch_size=3)
    assert len(df) == 14 and list(df["query"]) == [e.query for e in ex]
    tab = accuracy_table(df)
    assert set(tab.columns) >= {"task", "k", "shots", "n", "accuracy", "ci_low", "ci_high"}
    assert tab.n.sum() == 14
    batches = make_batches(encode_examples(model, ex), 4)
    assert sum(len(b) for b in batches) == 14
    assert all(len(set(len(e.prompt_ids) for e in b.encoded)) == 1 for b in batches)


@pytest.mark.parametrize("spec", ["tiny-gemma3", "tiny-hooked"])
def test_row_scorer_equals_per_batch_scores(spec):
    """Deferred unembedding (rows of many batches in shared chunks, any chunk size) gives the
    per-batch ``scores_from_logits`` of ``logits_at``; ``evaluate`` equals per-batch scoring."""
    model = tiny(spec)
    fam = arithmetic_family("add", ks=[1, 7, 19])
    ex = sample_family(fam, fam.tasks, 5, 2, seed=3, kind="t")
    batches = make_batches(encode_examples(model, ex), 4)
    assert len(batches) > 2  # rows of several batches share chunks
    ref = {}
    normed = {}
    with torch.no_grad():
        for i, b in enumerate(batches):
            ref[i] = scores_from_logits(
                model, model.logits_at(b.tokens, b.score_positions), b.answer_ids
            )
            normed[i] = model.normed_at(b.tokens, b.score_positions)
    for chunk in (1, 3, 7, 10_000):
        sc = RowScorer(model, chunk=chunk)
        for i, b in enumerate(batches):
            sc.add(i, normed[i], b.answer_ids)
        got = sc.results()
        assert set(got) == set(ref)
        for i in ref:
            for f in ("correct", "match", "terminated", "pred"):
                assert torch.equal(getattr(got[i], f), getattr(ref[i], f)), (chunk, i, f)
            for f in ("answer_logprob", "first_token_prob"):
                torch.testing.assert_close(getattr(got[i], f), getattr(ref[i], f))
    # answers := the model's own argmax on even rows (they match, so the terminator decides)
    sc = RowScorer(model, chunk=5)
    own = {}
    with torch.no_grad():
        for i, b in enumerate(batches):
            logits = model.logits_at(b.tokens, b.score_positions)
            ans = b.answer_ids.clone()
            ans[::2] = logits[::2, : b.answer_len].argmax(-1)
            own[i] = scores_from_logits(model, logits, ans)
            sc.add(i, normed[i], ans)
    got = sc.results()
    assert sum(int(own[i].match.sum()) for i in own) >= len(batches)
    for i in own:
        for f in ("correct", "match", "terminated"):
            assert torch.equal(getattr(got[i], f), getattr(own[i], f)), f
        assert torch.equal(got[i].pred, own[i].pred)
    df = evaluate(model, ex, batch_size=4)
    flat = {j: (i, r) for i, b in enumerate(batches) for r, j in enumerate(b.indices)}
    for j in range(len(ex)):
        i, r = flat[j]
        assert bool(df["correct"][j]) == bool(ref[i].correct[r])
        assert abs(df["answer_logprob"][j] - float(ref[i].answer_logprob[r])) < 1e-4
    sc = RowScorer(model)
    with pytest.raises(AddkError, match="score positions"):
        sc.add(0, normed[0][:, :-1], batches[0].answer_ids)
    sc.add(0, normed[0], batches[0].answer_ids)
    with pytest.raises(AddkError, match="added twice"):
        sc.add(0, normed[0], batches[0].answer_ids)


def test_json_task_files(tmp_path):
    good = tmp_path / "capital.json"
    good.write_text(
        json.dumps(
            [
                {"input": "france", "output": "paris"},
                {"input": "italy", "output": "rome"},
                {"input": "spain", "output": "madrid"},
            ]
        )
    )
    fam = json_family([good])
    assert fam.tasks["capital"].output("italy") == "rome" and not fam.numeric
    bad = tmp_path / "bad.json"
    for content, msg in [
        ("{", "not valid JSON"),
        ("[]", "non-empty list"),
        ('[{"input": "a"}]', "exactly 'input' and 'output'"),
        ('[{"input": "a", "output": "b"}, {"input": "a", "output": "c"}]', "two different outputs"),
    ]:
        bad.write_text(content)
        with pytest.raises(AddkError, match=msg):
            json_family([bad])


def test_model_info_and_kv_map():
    assert [kv_head_index(h, 32, 8) for h in (0, 3, 4, 31)] == [0, 0, 1, 7]
    with pytest.raises(AddkError):
        kv_head_index(0, 6, 4)
    m = tiny("tiny-llama-gqa")
    assert m.info.n_kv_heads == 2 and m.kv_head(3) == 1
    assert m.info.number_tokenization == "digit-split"
    assert tiny("tiny-gemma3").info.post_attn_norm
    with pytest.raises(AddkError, match="unknown model spec"):
        load_model("no-such-model")
    with pytest.raises(AddkError, match="hub"):
        load_model("nobody/not-a-model-xyz")


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["eval", "--model", "nope"], "unknown model spec"),
        (["eval", "--model", "tiny-llama", "--k", "40"], "outside the add family"),
        (["eval", "--model", "tiny-llama", "--shots", "200"], "shots need"),
        (["eval", "--model", "tiny-llama", "--n", "0"], "must be positive"),
        (["eval", "--model", "tiny-llama", "--format", "zzz"], "unknown prompt format"),
        (["eval", "--model", "tiny-llama", "--family", "div"], "unknown task family"),
        (["info", "--model", "meta-llama/Meta-Llama-3-8B-Instruct"], "offline"),
    ],
)
def test_cli_bad_input(argv, msg, capsys, tmp_path):
    out = tmp_path / "out"
    rc = main(argv + (["--out", str(out)] if argv[0] == "eval" else []))
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_bad_task_file(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text("[1, 2]")
    assert main(["eval", "--model", "tiny-llama", "--task-file", str(f)]) == 2
    assert "item 0" in capsys.readouterr().err


def test_cli_eval_and_info(tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(
        [
            "eval",
            "--model",
            "tiny-llama",
            "--k",
            "1-2",
            "--shots",
            "0,2",
            "--n",
            "5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert len(rows) == 4 and {r["shots"] for r in rows} == {0, 2}
    assert (out / "eval.csv").exists()
    assert "accuracy" in capsys.readouterr().out
    assert main(["info", "--model", "tiny-llama-gqa", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_kv_heads"] == 2 and info["n_layers"] == 3
