"""Models by name (resolve / build_tiny / fingerprint / load / describe), the chat policy's prompt/response boundary,
and the cached generation interface, on the tiny in-process model (and SmolLM2's tokenizer)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO

from repro.runtime import models
from repro.runtime.cache import GenerationCache, cache_key
from repro.runtime.chat import encode_pair, encode_prompt, render_prompt
from repro.runtime.generate import DecodingParams, HFGenerator, make_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def tiny_tok(tiny_dir):
    return models.load_tokenizer(str(tiny_dir))


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return models.load(str(tiny_dir), device="cpu")[0]


# --- tiny model -------------------------------------------------------------------------------------------------

def test_tiny_builds_deterministically(tiny_dir, tmp_path):
    again = models.build_tiny(tmp_path / "second" / "hf")
    assert again == tmp_path / "second" / "hf"
    fp1, fp2 = models.fingerprint_folder(tiny_dir), models.fingerprint_folder(again)
    assert len(fp1) == 64 and fp1 == fp2
    assert json.loads((again / "TINY_DONE.json").read_text()) == {"version": models.TINY_VERSION,
                                                                   "fingerprint": fp2}
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tiny_dir / name).read_bytes() == (again / name).read_bytes(), name
    # a second call on a built folder reuses it
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert models.build_tiny(again) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime


def test_fingerprint_changes_with_the_weights(tiny_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    assert models.fingerprint(str(copy)) == models.fingerprint_folder(tiny_dir)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = cfg.get("rms_norm_eps", 1e-6) * 2
    (copy / "config.json").write_text(json.dumps(cfg))
    assert models.fingerprint(str(copy)) != models.fingerprint_folder(tiny_dir)


def test_tiny_loads_with_chat_template(tiny_dir, tiny_tok, tiny_model):
    assert tiny_tok.chat_template and "<|im_start|>" in tiny_tok.chat_template
    assert tiny_tok.eos_token == "<|im_end|>" and tiny_tok.pad_token == "<|pad|>"
    assert models.chat_template_sha(tiny_tok) is not None
    assert tiny_model.config.model_type == "llama" and not tiny_model.training
    assert tiny_model.config.vocab_size == len(tiny_tok)
    prompt = render_prompt(tiny_tok, [{"role": "user", "content": "What is 2 + 3?"}])
    assert prompt == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_generates(tiny_dir, tiny_model, tmp_path):
    gen = HFGenerator(str(tiny_dir), cache=None, model_obj=tiny_model, batch_size=2)
    outs = gen.generate([[{"role": "user", "content": "What is 2 + 3?"}],
                         [{"role": "user", "content": "Write a python function."}]],
                        DecodingParams(max_new_tokens=6), tag="test.tiny", progress=False)
    assert len(outs) == 2
    for o in outs:
        assert isinstance(o.text, str) and not o.cached
        assert 1 <= o.n_output_tokens <= 6 and o.n_prompt_tokens > 5
        assert o.finish_reason in ("eos", "length")
    assert gen.stats.prompts == 2 and gen.stats.cached == 0 and gen.stats.seconds > 0


# --- resolve / describe ---------------------------------------------------------------------------------------

def test_resolve_registered_names(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    ref = models.resolve("tiny")
    assert (ref.kind, Path(ref.location)) == ("tiny", tmp_path / "cache" / "models" / "tiny" / "hf")
    ref = models.resolve("smollm2-135m-instruct")
    assert ref.kind == "offline"
    assert Path(ref.location) == tmp_path / "cache" / "models" / "smollm2-135m-instruct" / "hf"
    assert ref.info["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.resolve("qwen2.5-coder-1.5b-instruct").info["hub_id"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert not (tmp_path / "cache" / "models" / "tiny" / "hf").exists(), "resolve must not build or download"


def test_resolve_folder_hub_id_and_garbage(tiny_dir, tmp_path):
    ref = models.resolve(str(tiny_dir))
    assert (ref.kind, ref.location) == ("local", str(tiny_dir.resolve()))
    assert models.local_path(str(tiny_dir)) == str(tiny_dir.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.resolve(str(empty))
    ref = models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (ref.kind, ref.location) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    for garbage in ("not a model", "smollm2", "a/b/c", "./missing/folder", str(tmp_path / "missing")):
        with pytest.raises(ValueError) as e:
            models.resolve(garbage)
        msg = str(e.value)
        assert repr(garbage) in msg and "tiny" in msg and "smollm2-135m-instruct" in msg


def test_fetch_unknown_name():
    with pytest.raises(ValueError, match="no offline model named 'nope'"):
        models.fetch("nope")


def test_describe_local_folder(tiny_dir):
    info = models.describe(str(tiny_dir))
    assert info["kind"] == "local" and info["location"] == str(tiny_dir.resolve())
    assert info["fingerprint"] == models.fingerprint_folder(tiny_dir)


# --- hub checkpoints: offline once cached, revision pinned ------------------------------------------------------

SHA_MAIN, SHA_DEV = "a" * 40, "b" * 40


@pytest.fixture
def hf_cache(tiny_dir, tmp_path, monkeypatch):
    """A HF hub cache laid out as huggingface_hub lays it out (models--org--name/refs/<branch> holding a commit sha,
    snapshots/<sha>/ holding the files), the tiny model's files as the checkpoint at two commits; offline, and any
    hub call fails the test."""
    from huggingface_hub import HfApi, constants  # noqa: PLC0415

    repo = tmp_path / "hub" / "models--org--tiny"
    for branch, sha in (("main", SHA_MAIN), ("dev", SHA_DEV)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(sha)
        snap = repo / "snapshots" / sha
        snap.mkdir(parents=True)
        for f in tiny_dir.iterdir():
            if f.is_file() and not f.name.startswith((".", "TINY_DONE")):
                shutil.copy(f, snap / f.name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_SNAPSHOTS", {})

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was asked although the checkpoint is cached")

    monkeypatch.setattr(HfApi, "model_info", no_network)
    return repo


def test_a_cached_hub_model_works_offline_from_its_snapshot(hf_cache):
    snap = hf_cache / "snapshots" / SHA_MAIN
    assert models.fingerprint("org/tiny") == f"hub:org/tiny@{SHA_MAIN}"
    assert models.local_path("org/tiny") == str(snap)
    model, tok = models.load("org/tiny", device="cpu")
    assert tok.chat_template and model.config.vocab_size == len(tok)
    info = models.describe("org/tiny")
    assert (info["kind"], info["location"], info["revision"], info["requested_revision"]) == (
        "hub", "org/tiny", SHA_MAIN, None)
    gen = make_generator("org/tiny", backend="hf", device="cpu")
    assert gen.identity["model"] == f"hub:org/tiny@{SHA_MAIN}"


def test_a_pinned_revision_picks_its_snapshot(hf_cache):
    for name, sha in (("org/tiny@dev", SHA_DEV), (f"org/tiny@{SHA_DEV}", SHA_DEV), ("org/tiny@main", SHA_MAIN)):
        ref = models.resolve(name)
        assert (ref.kind, ref.location, ref.info["revision"]) == ("hub", "org/tiny", name.split("@")[1])
        assert models.fingerprint(name) == f"hub:org/tiny@{sha}"
        assert models.local_path(name) == str(hf_cache / "snapshots" / sha)
        assert models.describe(name)["revision"] == sha
    with pytest.raises(ValueError, match="not a registered name"):
        models.resolve("org/tiny@")


def test_offline_without_the_weights_is_a_clear_error(hf_cache):
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        models.local_path("org/absent")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        models.fingerprint("org/tiny@" + "c" * 40)          # a commit never downloaded
    for f in (hf_cache / "snapshots" / SHA_DEV).glob("*.safetensors"):
        f.unlink()                                           # a snapshot a tokenizer-only load would leave
    with pytest.raises(FileNotFoundError, match="with its weights"):
        models.local_path("org/tiny@dev")


def test_online_a_missing_snapshot_is_resolved_once_and_fetched_at_that_commit(tiny_dir, tmp_path, monkeypatch):
    import huggingface_hub  # noqa: PLC0415
    from huggingface_hub import HfApi, constants  # noqa: PLC0415

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_SNAPSHOTS", {})
    asked, fetched = [], []

    def model_info(self, repo_id, revision=None, **kw):
        asked.append((repo_id, revision))
        files = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "pytorch_model.bin", "consolidated.safetensors"]
        return SimpleNamespace(sha=SHA_MAIN, siblings=[SimpleNamespace(rfilename=f) for f in files])

    real = huggingface_hub.snapshot_download

    def snapshot_download(repo_id, revision=None, local_files_only=False, allow_patterns=None, **kw):
        if local_files_only:
            return real(repo_id, revision=revision, local_files_only=True, **kw)
        fetched.append((repo_id, revision, allow_patterns))
        snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / revision
        shutil.copytree(tiny_dir, snap, ignore=shutil.ignore_patterns(".*", "TINY_DONE*"))
        return str(snap)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(models, "snapshot_download", snapshot_download)
    assert models.fingerprint("org/tiny") == f"hub:org/tiny@{SHA_MAIN}"
    assert models.local_path("org/tiny").endswith(f"snapshots/{SHA_MAIN}")
    assert asked == [("org/tiny", None)] and len(fetched) == 1     # resolved once, then the process's pin
    repo, revision, patterns = fetched[0]
    assert (repo, revision) == ("org/tiny", SHA_MAIN)               # downloaded at the resolved commit
    assert {"model.safetensors.index.json", "model-*.safetensors"} <= set(patterns)
    assert not {"*.bin", "pytorch_model.bin", "consolidated.safetensors", "*.safetensors"} & set(patterns)


def test_recipe_model_revision(tmp_path):
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    assert load_recipe("smoke", ["model=org/tiny", "model.revision=abc123"]).model == "org/tiny@abc123"
    assert load_recipe("smoke", ["model.revision=dev"]).model == "tiny@dev"
    with pytest.raises(ValueError, match="not a registered name"):
        models.resolve("tiny@dev")                     # a revision belongs to hub ids only
    spec = yaml.safe_load((REPO / "repro" / "recipes" / "smoke.yaml").read_text())
    spec["model"] = {"name": "org/tiny", "revision": SHA_DEV}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    assert load_recipe(str(tmp_path / "r.yaml")).model == f"org/tiny@{SHA_DEV}"
    spec["model"] = {"name": "org/tiny@main", "revision": SHA_DEV}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="already names a revision"):
        load_recipe(str(tmp_path / "r.yaml"))


# --- encode_pair ----------------------------------------------------------------------------------------------

RESPONSES = ["The answer is 5.", " leading space", "\nstarts with a newline", "x", "",
             "```python\ndef f(x):\n    return x\n```", "Ünïcödé — 23 years"]


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def any_tok(request, tiny_tok, smollm2_dir):
    return tiny_tok if request.param == "tiny" else models.load_tokenizer(str(smollm2_dir))


@pytest.mark.parametrize("response", RESPONSES)
def test_encode_pair_boundary(any_tok, response):
    tok = any_tok
    messages = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]
    pair = encode_pair(tok, messages, response)
    prompt_ids = encode_prompt(tok, messages)
    assert pair.prompt_len == len(prompt_ids)
    assert pair.input_ids[:pair.prompt_len] == prompt_ids, "the prompt tokens generation saw must be a prefix"
    assert pair.n_response >= 1
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert pair.input_ids[-1] == eot, "the response must end with the end-of-turn token"
    assert eot not in pair.input_ids[pair.prompt_len:-1]
    labels = pair.labels()
    assert len(labels) == len(pair.input_ids)
    assert labels[:pair.prompt_len] == [-100] * pair.prompt_len
    assert labels[pair.prompt_len:] == pair.input_ids[pair.prompt_len:] and -100 not in labels[pair.prompt_len:]
    assert tok.decode(pair.input_ids[pair.prompt_len:], clean_up_tokenization_spaces=False) == response + "<|im_end|>"


def test_encode_pair_on_a_real_task_example(any_tok, data_dir):
    from evals.tasks import get_task  # noqa: PLC0415

    task = get_task("gsm8k")
    ex = task.load("train", data_dir, limit=1, seed=0)[0]
    pair = encode_pair(any_tok, task.train_messages(ex), task.gold_response(ex))
    assert pair.n_response > 10
    assert any_tok.decode(pair.input_ids[pair.prompt_len:], skip_special_tokens=True) == task.gold_response(ex)
    assert ex["question"] in any_tok.decode(pair.input_ids[:pair.prompt_len])


# --- the generation cache -------------------------------------------------------------------------------------

PROMPTS = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(3)]
PARAMS = DecodingParams(max_new_tokens=5)


def test_second_call_is_cached_and_takes_no_model_time(tiny_dir, tiny_model, tmp_path):
    cache = GenerationCache(tmp_path / "cache")
    gen = make_generator(str(tiny_dir), backend="hf", cache=cache, model_obj=tiny_model, batch_size=2)
    first = gen.generate(PROMPTS, PARAMS, tag="t.v1", progress=False)
    assert [o.cached for o in first] == [False] * 3
    seconds, tokens = gen.stats.seconds, gen.stats.output_tokens
    assert seconds > 0
    second = gen.generate(PROMPTS, PARAMS, tag="t.v1", progress=False)
    assert [o.cached for o in second] == [True] * 3
    assert [o.text for o in second] == [o.text for o in first]
    assert gen.stats.seconds == seconds and gen.stats.output_tokens == tokens
    assert gen.stats.prompts == 6 and gen.stats.cached == 3
    # a new process (fresh cache object and generator) finds the same records on disk
    fresh = HFGenerator(str(tiny_dir), cache=GenerationCache(tmp_path / "cache"), model_obj=tiny_model)
    again = fresh.generate(PROMPTS, PARAMS, tag="t.v1", progress=False)
    assert [o.cached for o in again] == [True] * 3 and fresh.stats.seconds == 0
    assert [(o.text, o.n_output_tokens, o.finish_reason) for o in again] == \
        [(o.text, o.n_output_tokens, o.finish_reason) for o in first]
    # the key covers decoding parameters and the template tag
    assert not any(o.cached for o in fresh.generate(PROMPTS[:1], DecodingParams(max_new_tokens=4), tag="t.v1",
                                                    progress=False))
    assert not any(o.cached for o in fresh.generate(PROMPTS[:1], PARAMS, tag="t.v2", progress=False))


def test_torn_last_line_is_skipped(tmp_path, caplog):
    cache = GenerationCache(tmp_path)
    cache.put_many("shard", {"k1": {"text": "one"}, "k2": {"text": "two"}})
    path = tmp_path / "shard.jsonl"
    data = path.read_text()
    path.write_text(data[: len(data) - 12])          # killed mid-write of the second record
    reloaded = GenerationCache(tmp_path)
    assert reloaded.get_many("shard", {"k1", "k2"}) == {"k1": {"key": "k1", "text": "one"}}
    assert any(r.name == "repro.runtime.cache" and r.levelname == "WARNING" and "shard.jsonl" in r.getMessage()
               for r in caplog.records), "dropping a torn line should be logged"


def test_record_written_after_a_torn_line_survives(tmp_path):
    """Two writers share a cache folder ("safe for concurrent appenders"): writer A has loaded the shard, then
    writer B is killed mid-append and leaves a torn last line. A's next append must start on a new line; glued to
    the torn fragment it would be unreadable, lost on the next load and generated again."""
    a = GenerationCache(tmp_path)
    a.put_many("shard", {"k1": {"text": "one"}})
    assert a.get_many("shard", {"k1"})
    path = tmp_path / "shard.jsonl"
    with open(path, "a", encoding="utf-8") as f:     # writer B, killed part-way through its line
        f.write('{"key": "k2", "text": "tw')
    a.put_many("shard", {"k3": {"text": "three"}})
    assert GenerationCache(tmp_path).get_many("shard", {"k1", "k2", "k3"}) == {
        "k1": {"key": "k1", "text": "one"}, "k3": {"key": "k3", "text": "three"}}


def test_generator_redoes_only_the_torn_record(tiny_dir, tiny_model, tmp_path):
    gen = HFGenerator(str(tiny_dir), cache=GenerationCache(tmp_path), model_obj=tiny_model, batch_size=4)
    first = gen.generate(PROMPTS, PARAMS, tag="t", progress=False)
    shard = tmp_path / f"{gen.shard}.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    shard.write_text("".join(lines[:-1]) + lines[-1][:30])
    torn_key = json.loads(lines[-1])["key"]
    resumed = HFGenerator(str(tiny_dir), cache=GenerationCache(tmp_path), model_obj=tiny_model, batch_size=4)
    outs = resumed.generate(PROMPTS, PARAMS, tag="t", progress=False)
    assert sum(not o.cached for o in outs) == 1
    assert [o.text for o in outs] == [o.text for o in first], "greedy redo of the same batch gives the same text"
    assert resumed.stats.seconds > 0
    keys = [cache_key(gen.identity, PARAMS.to_dict(), "t", gen.render(p)) for p in PROMPTS]
    assert [not o.cached for o in outs] == [k == torn_key for k in keys]


def test_batches_cap_padded_tokens_so_an_outlier_prompt_decodes_alone(tiny_dir, tiny_model):
    gen = HFGenerator(str(tiny_dir), cache=None, model_obj=tiny_model, batch_size=8)
    gen.max_batch_tokens = 1000
    lengths = {"long": 900, **{f"s{i}": 50 for i in range(10)}}
    order = sorted(lengths, key=lambda k: (-lengths[k], k))
    batches = gen._batches(order, lengths, max_new_tokens=40)
    assert batches[0] == ["long"]                          # 2 x (900 + 40) would exceed 1,000 padded tokens
    assert [len(b) for b in batches[1:]] == [8, 2]          # then the prompt cap (batch_size) binds
    assert [k for b in batches for k in b] == order         # order kept: a resumed run forms the same batches
    gen.max_batch_tokens = None
    assert [len(b) for b in gen._batches(order, lengths, max_new_tokens=40)] == [8, 3]


def test_hf_model_of_a_generator_is_its_own_or_loaded_with_its_adapter(monkeypatch):
    """Log-likelihood work takes an HF generator's own model; for one without (vLLM) it loads the same model and
    adapter with transformers."""
    from types import SimpleNamespace

    from repro.runtime.generate import hf_model_of

    own = object()
    assert hf_model_of(SimpleNamespace(model=own, model_name="m", adapter=None)) is own
    loads = []
    monkeypatch.setattr(models, "load", lambda name, adapter=None: (loads.append((name, adapter)) or "hf", "tok"))
    assert hf_model_of(SimpleNamespace(model_name="m", adapter="/a/adapter")) == "hf"
    assert loads == [("m", "/a/adapter")]
