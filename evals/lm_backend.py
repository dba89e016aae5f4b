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

Task definitions, prompts, few-shot sampling, metrics and versions stay lm-eval's: only the model changes.
Supported: ``loglikelihood`` and ``loglikelihood_rolling`` (HFLM's windowing, scored here). Not supported:
``generate_until`` (raises; use ``--model hf``). Equality with HFLM per choice is tested on the tiny model
(tests/test_lm_backend.py) and measured on SmolLM2 by benchmarks/lm_scoring.py.

From the lm-eval CLI (after ``import evals.lm_backend``, e.g. via ``python -m evals.lm_backend``)::

    python -m evals.lm_backend --model s3ft-packed --model_args pretrained=<dir> --tasks ...
"""
from __future__ import annotations

from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from repro.runtime.scoring import score_sequences

NAME = "s3ft-packed"
DEFAULT_MAX_BATCH_TOKENS = 1024


@register_model(NAME)
class PackedLM(HFLM):
    """HFLM with shared-prefix, padding-free log-likelihood scoring.

    Extra argument: ``max_batch_tokens`` (tokens per packed row; a shared segment whose subtree is larger is cached
    instead). ``batch_size`` is accepted (HFLM needs it) and unused by log-likelihood scoring.
    """

    def __init__(self, *args: Any, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.backend != "causal":
            raise ValueError(f"{NAME} scores decoder-only (causal) models; this one is {self.backend!r}")
        self.max_batch_tokens = int(max_batch_tokens)
        self.stats: dict[str, int] = {}     # summed over calls: see repro.runtime.scoring.score_sequences

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
        scores = score_sequences(self.model, seqs, n_scored, max_batch_tokens=self.max_batch_tokens,
                                 progress=not disable_tqdm and self.rank == 0, stats=self.stats)
        out = []
        for (request_str, _, _), s in zip(requests, scores):
            answer = (s.sum, s.greedy)
            if request_str is not None:      # rolling windows have no request string (HFLM does the same)
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
            out.append(answer)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            f"the {NAME} backend scores log-likelihoods only (loglikelihood, loglikelihood_rolling); generative "
            f"tasks need lm-eval's HF backend (evaluation.benchmark_backend=hf, or --model hf)")


def main() -> None:  # pragma: no cover - a thin wrapper over lm-eval's CLI with this backend registered
    from lm_eval.__main__ import cli_evaluate  # noqa: PLC0415

    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
