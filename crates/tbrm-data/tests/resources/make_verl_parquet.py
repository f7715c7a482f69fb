"""Writes verl_small.parquet: a tiny dataset in verl's RL schema, the way verl's
examples/data_preprocess scripts store it (pyarrow/pandas). Row 2 is malformed on purpose
(null ground truth). Regenerate with:
    python3 -m venv /tmp/pa-venv && /tmp/pa-venv/bin/pip install pyarrow
    /tmp/pa-venv/bin/python make_verl_parquet.py
"""
import pyarrow as pa
import pyarrow.parquet as pq

rows = [
    {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": "What is 2+3?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "5"},
        "extra_info": {"split": "test", "index": 0},
    },
    {
        "data_source": "openai/gsm8k",
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 7*6?"},
        ],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "42"},
        "extra_info": {"split": "test", "index": 1},
    },
    {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": "No answer here."}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": None},
        "extra_info": {"split": "test", "index": 2},
    },
    {
        "data_source": "lighteval/MATH",
        "prompt": [{"role": "user", "content": "Half of one?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "\\frac{1}{2}"},
        "extra_info": {"split": "train", "index": 3},
    },
]
# Two rows per row group, so row indices must be counted across groups.
pq.write_table(pa.Table.from_pylist(rows), "verl_small.parquet", row_group_size=2)
