"""`!function` helpers for the s3ft_* lm-eval task YAMLs in this folder.

Data location: every YAML names its files *relative to the benchmark data directory* in
``dataset_kwargs.data_files`` and loads them through ``custom_dataset: !function utils.load_local_json``.
lm-eval calls that function as ``custom_dataset(**task_metadata, **dataset_kwargs)``, and the task
metadata contains whatever was given to ``TaskManager(metadata=...)`` (CLI: ``--metadata``). So the data
directory is chosen at run time, with no edited or rendered YAML::

    lm_eval --include_path evals/lm_eval_tasks --tasks s3ft_hellaswag \
        --metadata '{"s3ft_data_dir": "/path/to/data"}' ...

``S3FT_DATA_DIR`` in the environment is the fallback. ``evals.benchmarks`` passes the directory explicitly.

Where lm-eval ships the same helper (hellaswag preprocessing, winogrande partial evaluation, truthfulqa
mc2 scoring) it is imported from lm-eval so the numbers match the harness's; a verbatim copy is the
fallback should the module ever stop being importable.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np

DATA_DIR_KEY = "s3ft_data_dir"
DATA_DIR_ENV = "S3FT_DATA_DIR"


def resolve_data_files(data_files: dict[str, str], data_dir: str | os.PathLike | None) -> dict[str, str]:
    """Turn the YAML's relative ``data_files`` into absolute paths under ``data_dir``."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise ValueError(
            f"s3ft lm-eval tasks need the benchmark data directory: pass metadata "
            f"{{'{DATA_DIR_KEY}': <dir>}} to the TaskManager (CLI: --metadata) or set {DATA_DIR_ENV}"
        )
    root = Path(data_dir).expanduser().resolve()
    out = {}
    for split, rel in data_files.items():
        p = Path(rel)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise FileNotFoundError(f"benchmark data file {p} not found (split {split!r}, data dir {root})")
        out[split] = str(p)
    return out


def load_local_json(data_files: dict[str, str] | None = None, **metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` loader: ``datasets.load_dataset('json', data_files=...)`` on local files.

    ``metadata`` is lm-eval's task metadata (version, config_source, ...) plus the TaskManager's; only
    ``s3ft_data_dir`` is used.
    """
    if not data_files:
        raise ValueError("s3ft task YAML must set dataset_kwargs.data_files")
    return datasets.load_dataset("json", data_files=resolve_data_files(data_files, metadata.get(DATA_DIR_KEY)))


# --------------------------------------------------------------------------------------------- HellaSwag
try:  # lm-eval's own preprocessing (lm_eval/tasks/hellaswag/utils.py)
    from lm_eval.tasks.hellaswag.utils import preprocess as hellaswag_preprocess
except Exception:  # pragma: no cover - verbatim copy of lm-eval 0.4.13

    def hellaswag_preprocess(text):
        text = text.strip()
        # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
        text = text.replace(" [title]", ". ")
        text = re.sub("\\[.*?\\]", "", text)
        text = text.replace("  ", " ")
        return text


def hellaswag_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """lm-eval's hellaswag ``process_docs``: query = activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize()."""

    def _process_doc(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {
            "query": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [hellaswag_preprocess(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process_doc)


# -------------------------------------------------------------------------------------------- WinoGrande
try:  # lm-eval's partial-evaluation formulation (lm_eval/tasks/winogrande/preprocess_winogrande.py)
    from lm_eval.tasks.winogrande.preprocess_winogrande import (
        doc_to_choice as winogrande_doc_to_choice,
    )
    from lm_eval.tasks.winogrande.preprocess_winogrande import (
        doc_to_target as winogrande_doc_to_target,
    )
    from lm_eval.tasks.winogrande.preprocess_winogrande import (
        doc_to_text as winogrande_doc_to_text,
    )
except Exception:  # pragma: no cover - verbatim copy of lm-eval 0.4.13

    def winogrande_doc_to_text(doc):
        answer_to_num = {"1": 0, "2": 1}
        return answer_to_num[doc["answer"]]

    def winogrande_doc_to_target(doc):
        idx = doc["sentence"].index("_") + 1
        return doc["sentence"][idx:].strip()

    def winogrande_doc_to_choice(doc):
        idx = doc["sentence"].index("_")
        options = [doc["option1"], doc["option2"]]
        return [doc["sentence"][:idx] + opt for opt in options]


# ------------------------------------------------------------------------------------------- TruthfulQA
try:  # lm-eval's mc2 scoring (lm_eval/tasks/truthfulqa/utils.py)
    from lm_eval.tasks.truthfulqa.utils import process_results_mc2 as truthfulqa_process_results_mc2
except Exception:  # pragma: no cover - same maths as lm-eval 0.4.13

    def truthfulqa_process_results_mc2(doc, results):
        ll, _ = zip(*results)
        probs = np.exp(np.array(ll))
        probs_norm = probs / np.sum(probs)
        labels = np.array(doc["mc2_targets"]["labels"])
        return {"acc": np.sum(probs_norm[labels == 1])}


# ------------------------------------------------------------------------------------------ ARC-Challenge
def arc_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Original AllenAI ARC rows -> the HF ``allenai/ai2_arc`` schema that lm-eval's arc YAML expects.

    ``{id, question: {stem, choices: [{text, label}]}, answerKey}`` ->
    ``{id, question: stem, choices: {text: [...], label: [...]}, answerKey}`` (labels kept as they are,
    including the ``1..4`` ones, exactly as the HF loading script does).
    """

    def _convert(doc):
        q = doc["question"]
        return {
            "id": doc["id"],
            "question": q["stem"],
            "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
            "answerKey": doc["answerKey"],
        }

    return dataset.map(_convert, remove_columns=dataset.column_names)


# -------------------------------------------------------------------------------------------------- MMLU
# The 57 subjects, as in lm_eval/tasks/mmlu/_generate_configs.py (subject -> category).
MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}


def _is_subject(doc: dict, subject: str) -> bool:
    return doc["subject"] == subject


def _make_mmlu_filter(subject: str):
    def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
        # keeps file order, so a subject's doc_id i is its i-th row in the file (as with cais/mmlu configs)
        return dataset.filter(_is_subject, fn_kwargs={"subject": subject})

    process_docs.__name__ = process_docs.__qualname__ = f"mmlu_{subject}"
    process_docs.__doc__ = f"Rows of the all-subjects MMLU file whose subject is {subject!r} (test and dev splits)."
    return process_docs


# `process_docs: !function utils.mmlu_<subject>` in each s3ft_mmlu*_<subject>.yaml
for _subject in MMLU_SUBJECTS:
    globals()[f"mmlu_{_subject}"] = _make_mmlu_filter(_subject)
del _subject
