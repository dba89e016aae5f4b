"""Methods differ only in their targets: which source each example gets, and nothing else about training."""
from __future__ import annotations

from pathlib import Path

import pytest

from evals.judges import Verdict
from evals.tasks.base import Split, Task, user
from methods.registry import get_method, list_methods, method_ids
from methods.targets import TargetContext, build
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import DecodingParams, Generation

IDS = [f"ex{i}" for i in range(10)]
OWN_OK = {"ex0", "ex1", "ex2", "ex3"}          # own answers the judge accepts
PARA_OK = {"ex2", "ex3", "ex4", "ex5", "ex6"}  # paraphrases the judge accepts
PARA_DIRTY = {"ex6"}                           # accepted by the judge but talks about "the reference answer"


class FakeTask(Task):
    """A task whose judge accepts exactly the responses the test decides."""

    name = "fake"
    description = "test task"
    template_version = "fake-v1"
    judge_version = "fake-judge-v1"

    def load_split(self, split, data_dir):
        return Split([{"id": i, "question": f"question {i}", "answer": f"gold {i}"} for i in IDS], {})

    def predict_messages(self, ex):
        return user(f"Q: {ex['question']}")

    def paraphrase_messages(self, ex):
        return user(f"P: {ex['question']} | {ex['answer']}")

    def gold_response(self, ex):
        return ex["answer"]

    def judge(self, ex, response):
        if response.startswith("own"):
            return Verdict(ex["id"] in OWN_OK, "own")
        return Verdict(ex["id"] in PARA_OK, "para")


class FakeGenerator:
    """Answers "own answer to exN" to prediction prompts and "paraphrase of exN" to paraphrase prompts."""

    def __init__(self):
        from repro.runtime.generate import GenerationStats

        self.calls: list[tuple[str, int]] = []
        self.stats = GenerationStats()

    def describe(self):
        return {"backend": "fake"}

    def generate(self, prompts, params, *, tag, progress=True):
        self.calls.append((tag, len(prompts)))
        outs = []
        for p in prompts:
            text = p[-1]["content"]
            ex_id = text.split("question ")[1].split()[0]
            if text.startswith("Q:"):
                outs.append(Generation(f"own answer to {ex_id}", 3, 4, "eos"))
            else:
                extra = " as the reference answer says" if ex_id in PARA_DIRTY else ""
                outs.append(Generation(f"paraphrase of {ex_id}{extra}", 3, 4, "eos"))
        return outs


def build_sources(method: str, tmp_path: Path) -> tuple[dict, dict, FakeGenerator]:
    task = FakeTask()
    gen = FakeGenerator()
    ctx = TargetContext(task, task.load("train", None), lambda: gen, DecodingParams(8), DecodingParams(8),
                        cache=GenerationCache(tmp_path / "cache"), progress=False)
    summary = build(method, ctx, tmp_path / method, score=False)
    from repro.runtime.store import read_jsonl

    records = read_jsonl(tmp_path / method / "targets.jsonl")
    return {r["id"]: r["source"] for r in records}, summary, gen


def test_registry_lists_every_method_with_a_description():
    listed = list_methods()
    assert {"base", "sft", "s3ft", "sdft", "ssr", "self_only"} <= set(listed)
    assert all(isinstance(d, str) and len(d) > 10 for d in listed.values())
    assert get_method("base").trains is False and get_method("s3ft").trains is True
    assert "targets" not in method_ids() and "train" not in method_ids()
    with pytest.raises(KeyError, match="unknown method"):
        get_method("nope")


def test_s3ft_picks_own_then_clean_paraphrase_then_gold(tmp_path):
    sources, summary, gen = build_sources("s3ft", tmp_path)
    expected = {i: "model" if i in OWN_OK else "paraphrase" if i in PARA_OK - PARA_DIRTY else "gold" for i in IDS}
    assert sources == expected
    # S3FT paraphrases only where its own answer failed: 6 of 10 examples.
    assert [n for tag, n in gen.calls if ".paraphrase." in tag] == [len(IDS) - len(OWN_OK)]
    assert summary["sources"]["model"]["count"] == 4
    assert summary["sources"]["paraphrase"]["count"] == 2      # ex4, ex5 (ex6 is filtered)
    assert summary["sources"]["gold"]["count"] == 4
    assert summary["sources"]["model"]["share"] == pytest.approx(0.4)
    para = summary["acceptance"]["paraphrase"]
    assert para["generated"] == 6 and para["accepted"] == 2


def test_ssr_sdft_self_only_sft_sources(tmp_path):
    ssr, _, _ = build_sources("ssr", tmp_path)
    assert ssr == {i: "model" if i in OWN_OK else "gold" for i in IDS}
    sdft, _, gen = build_sources("sdft", tmp_path)
    assert sdft == {i: "paraphrase" if i in PARA_OK - PARA_DIRTY else "gold" for i in IDS}
    assert not any(".predict." in tag for tag, _ in gen.calls), "SDFT has no own-answer tier"
    self_only, summary, _ = build_sources("self_only", tmp_path)
    assert self_only == {i: "model" for i in OWN_OK}
    assert summary["dropped"] == 6 and summary["dropped_share"] == pytest.approx(0.6)
    sft, _, gen = build_sources("sft", tmp_path)
    assert sft == {i: "gold" for i in IDS} and gen.calls == []


def test_targets_use_the_training_prompt_and_own_text(tmp_path):
    build_sources("s3ft", tmp_path)
    from repro.runtime.store import read_jsonl

    by_id = {r["id"]: r for r in read_jsonl(tmp_path / "s3ft" / "targets.jsonl")}
    assert by_id["ex0"]["target"] == "own answer to ex0"
    assert by_id["ex4"]["target"] == "paraphrase of ex4"
    assert by_id["ex9"]["target"] == "gold ex9"
    assert by_id["ex0"]["prompt"] == [{"role": "user", "content": "Q: question ex0"}]
    cands = {c["id"]: c for c in read_jsonl(tmp_path / "s3ft" / "candidates.jsonl")}
    assert cands["ex6"]["candidates"]["paraphrase"]["reason"].startswith("filtered:")


# --- judge accepts nothing: every selective method collapses to SFT, bit for bit -------------------------------

class RejectAllGSM8K:
    """GSM8K with a judge that accepts nothing (and a distinct judge version so cached verdicts don't leak)."""

    def __new__(cls):
        from evals.tasks.gsm8k import GSM8K

        class _Reject(GSM8K):
            judge_version = "reject-all-test"

            def judge(self, ex, response):
                return Verdict(False, "rejected by test judge")

        return _Reject()


@pytest.fixture(scope="module")
def reject_all_targets(tmp_path_factory, data_dir):
    from repro.runtime.generate import make_generator

    root = tmp_path_factory.mktemp("reject")
    task = RejectAllGSM8K()
    examples = task.load("train", data_dir, limit=6, seed=3)
    cache = GenerationCache(root / "cache")
    gen = make_generator("tiny", backend="hf", cache=cache, batch_size=8)
    out = {}
    for method in ("sft", "s3ft", "sdft", "ssr"):
        ctx = TargetContext(task, examples, lambda: gen, DecodingParams(12), DecodingParams(12), cache=cache,
                            progress=False)
        out[method] = (build(method, ctx, root / method), root / method / "targets.jsonl")
    return out


def test_reject_all_builds_exactly_the_gold_targets(reject_all_targets):
    from repro.runtime.store import read_jsonl

    sft = read_jsonl(reject_all_targets["sft"][1])
    for method in ("s3ft", "sdft", "ssr"):
        summary, path = reject_all_targets[method]
        assert read_jsonl(path) == sft, method
        assert summary["sources"]["gold"]["share"] == 1.0
    # the summary says why: every own answer / paraphrase was rejected by the judge
    s3ft = reject_all_targets["s3ft"][0]
    assert s3ft["acceptance"]["model"]["accepted"] == 0 and s3ft["acceptance"]["model"]["generated"] == 6
    acc = s3ft["acceptance"]["model"]
    # the tiny model runs into the 12-token cap on most answers: those are rejected as truncated before judging
    assert acc["rejected_by"]["judge"] + acc["rejected_by"]["truncated"] == 6
    assert acc["rejected_by"]["truncated"] == acc["truncated"]
    if acc["rejected_by"]["judge"]:
        assert any(k.startswith("rejected by test judge") for k in acc["rejections"])


def test_reject_all_trains_bit_identically_to_sft(reject_all_targets, tmp_path):
    from safetensors.torch import load_file

    from methods.train import train
    from methods.train_config import TrainConfig, load_records

    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3, seed=7)
    logs, weights = {}, {}
    for method in ("sft", "s3ft", "sdft", "ssr"):
        logs[method] = train("tiny", load_records(reject_all_targets[method][1]), cfg, tmp_path / method,
                             progress=False)
        weights[method] = load_file(tmp_path / method / "adapter" / "adapter_model.safetensors")
    ref_losses = [s["loss"] for s in logs["sft"]["steps"]]
    assert len(ref_losses) == 4
    for method in ("s3ft", "sdft", "ssr"):
        assert [s["loss"] for s in logs[method]["steps"]] == ref_losses, method
        assert weights[method].keys() == weights["sft"].keys()
        for name, tensor in weights["sft"].items():
            assert tensor.equal(weights[method][name]), f"{method}: {name} differs"
    # and training did something: the adapter's B matrices left zero
    assert any(t.abs().sum() > 0 for n, t in weights["sft"].items() if "lora_B" in n)


# --- truncated candidates are never targets ---------------------------------------------------------------------

TRUNCATED = {"ex0", "ex4"}   # ex0's own answer and ex4's paraphrase are judged correct but stopped on the token cap


class TruncatingGenerator(FakeGenerator):
    def generate(self, prompts, params, *, tag, progress=True):
        outs = super().generate(prompts, params, tag=tag, progress=progress)
        for p, o in zip(prompts, outs):
            if p[-1]["content"].split("question ")[1].split()[0] in TRUNCATED:
                o.finish_reason, o.n_output_tokens = "length", params.max_new_tokens
        return outs


@pytest.mark.parametrize("method", ["sft", "ssr", "s3ft", "sdft", "self_only"])
def test_a_truncated_candidate_is_never_a_target(method, tmp_path):
    from repro.runtime.store import read_jsonl

    task = FakeTask()
    gen = TruncatingGenerator()
    ctx = TargetContext(task, task.load("train", None), lambda: gen, DecodingParams(8), DecodingParams(8),
                        cache=GenerationCache(tmp_path / "cache"), progress=False)
    summary = build(method, ctx, tmp_path / method, score=False)
    records = {r["id"]: r for r in read_jsonl(tmp_path / method / "targets.jsonl")}
    cands = {c["id"]: c["candidates"] for c in read_jsonl(tmp_path / method / "candidates.jsonl")}
    for ex_id, by_source in cands.items():
        for source, c in by_source.items():
            if c["finish_reason"] == "length":
                assert not c["accepted"] and c["rejected_by"] == "truncated" and c["reason"].startswith("truncated")
                assert c["verdict"] is (ex_id in (OWN_OK if source == "model" else PARA_OK))   # judged all the same
                assert records.get(ex_id, {}).get("source") != source, f"{method}: truncated {source} of {ex_id}"
    # the judge accepted ex0's own answer and ex4's paraphrase; cut off, they fall back to the next tier
    if method in ("ssr", "s3ft"):
        assert records["ex0"]["source"] == "gold"       # ex0's paraphrase is not judged correct either
    if method == "self_only":
        assert "ex0" not in records and summary["n_targets"] == len(OWN_OK) - 1
    if method in ("sdft", "s3ft"):
        assert records["ex4"]["source"] == "gold"
    for source in ("model", "paraphrase"):
        if source in summary["acceptance"]:
            acc = summary["acceptance"][source]
            assert acc["rejected_by"]["truncated"] == acc["truncated"] >= 1
            # judge-accepted = accepted + the one judged-correct truncated candidate + those the filters removed
            assert acc["judge_accepted"] == (acc["accepted"] + 1 + acc["rejected_by"]["filter"]
                                             + acc["rejected_by"]["validity"])


def test_the_target_api_refuses_truncated_and_rejected_candidates(tmp_path):
    from methods.targets import Candidate

    task = FakeTask()
    ctx = TargetContext(task, task.load("train", None), TruncatingGenerator, DecodingParams(8), DecodingParams(8),
                        progress=False)
    ex = ctx.examples[0]
    with pytest.raises(ValueError, match="cannot be a training target"):
        ctx.target(ex, Candidate("model", "own answer cut mid-", False, "truncated", "length", True, "truncated"))
    with pytest.raises(ValueError, match="cannot be a training target"):
        ctx.target(ex, Candidate("model", "own answer", False, "wrong", "eos", False, "judge"))


def test_a_method_that_bypasses_the_check_fails_the_build(tmp_path, monkeypatch):
    """A method that builds a TargetRecord from a truncated candidate itself is caught by build()."""
    import methods.ssr as ssr
    from methods.targets import TargetRecord

    def rogue(self, ctx):
        preds = ctx.predictions(ctx.examples)
        return [TargetRecord(ex["id"], ctx.task.train_messages(ex), p.text, "model")
                for ex, p in zip(ctx.examples, preds)]

    monkeypatch.setattr(ssr.SSR, "build_targets", rogue)
    task = FakeTask()
    gen = TruncatingGenerator()
    ctx = TargetContext(task, task.load("train", None), lambda: gen, DecodingParams(8), DecodingParams(8),
                        progress=False)
    with pytest.raises(ValueError, match="rejected"):
        build("ssr", ctx, tmp_path / "rogue", score=False)


def test_target_building_and_evaluation_share_one_prediction_cache_tag():
    """Own answers to training prompts and to test prompts are cached under the task's one prediction tag, so a
    cell's base answers are reused across target building, evaluation and the forgetting signal."""
    from evals.indomain import evaluate_task

    task, gen = FakeTask(), FakeGenerator()
    ctx = TargetContext(task, task.load("train", None), lambda: gen, DecodingParams(8), DecodingParams(8),
                        progress=False)
    ctx.predictions(ctx.examples)
    evaluate_task(task, task.load("train", None), gen, DecodingParams(8), progress=False)
    assert [tag for tag, _ in gen.calls] == [task.predict_tag] * 2 == ["fake.predict.fake-v1"] * 2
