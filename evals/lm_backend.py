"""An lm-eval model backend that scores log-likelihoods with shared prefixes (registered as ``s3ft-packed``).

lm-eval's HF backend (``HFLM``) runs every (context, continuation) request as its own padded sequence: a HellaSwag
context once per ending, a TruthfulQA 6-shot preamble and question once per answer, every item's preamble again.
``PackedLM`` keeps everything of HFLM that decides *what* is scored - it is a subclass, so the tokenisation
(``tok_encode``, ``_encode_pair``: trailing spaces of the context move to the continuation, the continuation is the
tail of the jointly encoded string, empty contexts get ``prefix_token_id``), the left truncation to ``max_length``
and the (log-likelihood, is-greedy) answers are HFLM's own - and replaces only *how*: all requests of a call go into
one token trie (repro.runtime.packing.PrefixTree) and every distinct prefix is run once (repro.runtime.scoring.score_sequences):

- an item's context is computed once for all its choices (HellaSwag, ARC, TruthfulQA, MMLU);
- a preamble shared by every item of a task (TruthfulQA's few-shot block, MMLU's subject line) is computed once,
  kept as a KV cache, and every item's rows run on top of it;
- WinoGrande's partial scoring puts the two options in the *context* and scores the shared rest of the sentence:
  only the words before the blank are a shared prefix; the scored suffix attends to a different option in each
  request, so it is computed twice, as in HFLM;
- no padding: rows are packed under a tree-attention mask, and only positions that predict a scored token go
  through the LM head.

Resumable scoring: given a ``journal`` (an append-only repro.runtime.cache.GenerationCache shard), the requests of a
call are scored in chunks of ``journal_chunk`` requests, in order, and each chunk's answers are appended as one
record as soon as they are computed; a call that finds a chunk's record (same requests, same packing budget) takes
its answers from it. A scoring killed midway thus resumes from its last finished chunk, and gives exactly the
answers of one never stopped (a chunk is packed the same way whether or not the run was interrupted; a line torn by
a kill is dropped and its chunk redone). Without a journal every request of a call is packed together, as before.

Task definitions, prompts, few-shot sampling, metrics and versions stay lm-eval's: only the model changes.
Supported: ``loglikelihood`` and ``loglikelihood_rolling`` (HFLM's windowing, scored here). Not supported:
``generate_until`` (raises; use ``--model hf``). Equality with HFLM per choice is tested on the tiny model
(tests/test_lm_backend.py) and measured on SmolLM2 by benchmarks/lm_scoring.py.

From the lm-eval CLI (after ``import evals.lm_backend``, e.g. via ``python -m evals.lm_backend``)::

    python -m evals.lm_backend --model s3ft-packed --model_args pretrained=<dir> --tasks ...
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from repro.runtime.cache import GenerationCache
from repro.runtime.scoring import score_sequences

log = logging.getLogger(__name__)

NAME = "s3ft-packed"
DEFAULT_MAX_BATCH_TOKENS = 1024
#: Requests per journalled chunk: a kill loses at most one chunk; prefixes are shared within a chunk only (a
#: task's few-shot preamble is computed once per chunk instead of once per call).
JOURNAL_CHUNK_REQUESTS = 256


@register_model(NAME)
class PackedLM(HFLM):
    """HFLM with shared-prefix, padding-free log-likelihood scoring.

    Extra arguments: ``max_batch_tokens`` (tokens per packed row; a shared segment whose subtree is larger is
    cached instead); ``journal`` = (GenerationCache, shard) and ``journal_chunk`` (default
    ``JOURNAL_CHUNK_REQUESTS``, read when the model is made): resumable scoring (module docstring).
    ``batch_size`` is accepted (HFLM needs it) and unused by log-likelihood scoring.
    """

    def __init__(self, *args: Any, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 journal: tuple[GenerationCache, str] | None = None, journal_chunk: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.backend != "causal":
            raise ValueError(f"{NAME} scores decoder-only (causal) models; this one is {self.backend!r}")
        self.max_batch_tokens = int(max_batch_tokens)
        self.journal = journal
        self.journal_chunk = int(JOURNAL_CHUNK_REQUESTS if journal_chunk is None else journal_chunk)
        if self.journal_chunk < 1:
            raise ValueError(f"journal_chunk must be >= 1, got {journal_chunk}")
        # summed over calls: see repro.runtime.scoring.score_sequences; with a journal also the requests scored
        # now (journal_scored) and those taken from it (journal_reused)
        self.stats: dict[str, int] = {}
        # called with (chunks done, chunks) after each journalled chunk, taken or scored: progress for a caller
        self.on_chunk: Callable[[int, int], None] | None = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        seqs, n_scored = [], []
        for _, context_enc, continuation_enc in requests:
            # HFLM's checks and its left truncation: the model sees the last max_length tokens before each target
            if not context_enc or not continuation_enc:
                raise ValueError("a log-likelihood request needs a non-empty context and continuation")
            if len(continuation_enc) > self.max_length:
                raise ValueError(f"continuation of {len(continuation_enc)} tokens exceeds max_length "
                                 f"{self.max_length}")
            seqs.append((context_enc + continuation_enc)[-(self.max_length + 1):])
            n_scored.append(len(continuation_enc))
        progress = not disable_tqdm and self.rank == 0
        if self.journal is None:
            answers = [(s.sum, s.greedy) for s in score_sequences(
                self.model, seqs, n_scored, max_batch_tokens=self.max_batch_tokens, progress=progress,
                stats=self.stats)]
        else:
            answers = self._journalled(seqs, n_scored, progress)
        out = []
        for (request_str, _, _), answer in zip(requests, answers):
            if request_str is not None:      # rolling windows have no request string (HFLM does the same)
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
            out.append(answer)
        return out

    def _journalled(self, seqs: list[list[int]], n_scored: list[int], progress: bool) -> list[tuple[float, bool]]:
        """Score chunk by chunk, appending each chunk's answers to the journal; reuse chunks found there."""
        cache, shard = self.journal
        n, size = len(seqs), self.journal_chunk
        bounds = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
        keys = [chunk_key(seqs[lo:hi], n_scored[lo:hi], self.max_batch_tokens) for lo, hi in bounds]
        found = cache.get_many(shard, keys)
        answers: list[tuple[float, bool]] = []
        for c, ((lo, hi), key) in enumerate(zip(bounds, keys)):
            if key in found:
                answers += [(float(a), bool(g)) for a, g in found[key]["answers"]]
                self.stats["journal_reused"] = self.stats.get("journal_reused", 0) + hi - lo
            else:
                scores = score_sequences(self.model, seqs[lo:hi], n_scored[lo:hi],
                                         max_batch_tokens=self.max_batch_tokens, progress=progress, stats=self.stats)
                chunk = [(s.sum, s.greedy) for s in scores]
                cache.put_many(shard, {key: {"answers": chunk}})
                answers += chunk
                self.stats["journal_scored"] = self.stats.get("journal_scored", 0) + hi - lo
                log.info("log-likelihood chunk %d/%d scored (%d requests)", c + 1, len(bounds), hi - lo)
            if self.on_chunk is not None:
                self.on_chunk(c + 1, len(bounds))
        return answers

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            f"the {NAME} backend scores log-likelihoods only (loglikelihood, loglikelihood_rolling); generative "
            f"tasks need lm-eval's HF backend (evaluation.benchmark_backend=hf, or --model hf)")


def chunk_key(seqs: list[list[int]], n_scored: list[int], max_batch_tokens: int) -> str:
    """A chunk's journal key: its requests in order and the packing budget (together they fix every bit of the
    answers). The scored model is the journal's (its shard), not the key's."""
    blob = json.dumps({"seqs": seqs, "n_scored": n_scored, "max_batch_tokens": max_batch_tokens})
    return hashlib.sha256(blob.encode()).hexdigest()


def main() -> None:  # pragma: no cover - a thin wrapper over lm-eval's CLI with this backend registered
    from lm_eval.__main__ import cli_evaluate  # noqa: PLC0415

    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
