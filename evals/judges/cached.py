"""Judging through the cache: verdicts of deterministic judges are stored next to the generations, so every method
and every evaluation on the same responses judges each one once (MBPP's sandbox runs are the expensive part)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from evals.judges import Verdict
from evals.tasks.base import Task
from repro.runtime.cache import GenerationCache, cache_key


def _example_hash(ex: dict) -> str:
    return hashlib.sha256(json.dumps(ex, sort_keys=True, default=str).encode()).hexdigest()[:16]


def judge_cached(task: Task, examples: Sequence[dict], responses: Sequence[str], cache: GenerationCache | None,
                 *, progress: bool = False) -> list[Verdict]:
    """`task.judge_many`, with deterministic verdicts read from / written to the cache. LLM-judge verdicts are not
    stored here: their generations are already cached under the judge model's own key."""
    cacheable = cache is not None and getattr(task, "judge_kind", "match") != "llm"
    if not cacheable:
        return task.judge_many(examples, responses, progress=progress)
    identity = {"task": task.name, "judge_version": task.judge_version}
    keys = [cache_key(identity, {}, _example_hash(ex), r) for ex, r in zip(examples, responses)]
    shard = f"verdicts-{task.name}"
    found = cache.get_many(shard, set(keys))
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        verdicts = task.judge_many([examples[i] for i in todo], [responses[i] for i in todo], progress=progress)
        new = {keys[i]: {"id": examples[i].get("id"), **v.to_dict()} for i, v in zip(todo, verdicts)}
        cache.put_many(shard, new)
        found.update(new)
    return [Verdict(found[k]["correct"], found[k]["reason"], found[k].get("extracted")) for k in keys]
