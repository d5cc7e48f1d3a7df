"""Hostile .lrt files: a CI-sized fuzz run (>= 100,000 mutated files, see fuzz_lrt.py) and
the corpus of inputs that once broke the loader. Every case must load and run, or raise an
lstm_rt error; a crash, another exception, a slow case or a large allocation fails."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lstm_rt
from lstm_rt.errors import LstmRtError, ModelFormatError
from fuzz_lrt import check_case
from lrt_tamper import rebuild
from util import random_layer, sequence_model

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "fuzz_corpus")
CASES = 100_000


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CORPUS) if f.endswith(".lrt")))
def test_corpus_of_once_failing_files(name):
    path = os.path.join(CORPUS, name)
    with pytest.raises(ModelFormatError):
        lstm_rt.load(path)
    check_case(path)


def test_fuzz_100k_mutated_files():
    """Two processes (this machine has two cores), each with a 2 GiB address-space limit."""
    def one(seed):
        return subprocess.run([sys.executable, os.path.join(HERE, "fuzz_lrt.py"), "--cases",
                               str(CASES // 2), "--seed", str(seed), "--memory-mb", "2048"],
                              capture_output=True, text=True, timeout=900)
    with ThreadPoolExecutor(2) as ex:
        procs = list(ex.map(one, [11, 12]))
    total, outcomes = 0, {}
    for p in procs:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        res = json.loads(p.stdout)
        total += res["cases"]
        for k, v in res["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    assert total >= CASES
    # the mutations reach past the checksum: many distinct checks fire, and many files load
    assert sum(1 for k in outcomes if k.startswith("rejected")) >= 40
    assert outcomes.get("loaded and ran", 0) >= CASES // 10


def _saved(tmp_path, model):
    path = tmp_path / "m.lrt"
    model.save(path)
    return path, path.read_bytes()


def test_fuzz_findings_stay_fixed(tmp_path):
    """Two findings of the fuzzer, rebuilt by hand: a GRU node claiming a cell-state output
    (was a KeyError at run time) and a port whose dtype is not a string (AttributeError)."""
    path, data = _saved(tmp_path, sequence_model(random_layer("GRU", 3, 4, rng=np.random.default_rng(0))))

    def gru_c(h):
        h["meta"]["nodes"][0]["outputs"][2] = "c"
    path.write_bytes(rebuild(data, gru_c))
    with pytest.raises(ModelFormatError, match="no cell state output"):
        lstm_rt.load(path)

    def port_dtype(h):
        h["meta"]["inputs"][0]["dtype"] = 7
    path.write_bytes(rebuild(data, port_dtype))
    with pytest.raises(ModelFormatError, match="dtype must be float32, int32 or int64"):
        lstm_rt.load(path)


def test_errors_are_lstm_rt_errors_and_name_the_file(tmp_path):
    path, data = _saved(tmp_path, sequence_model(random_layer("LSTM", 3, 4, rng=np.random.default_rng(0))))
    path.write_bytes(data[:100])
    with pytest.raises(LstmRtError, match=str(path).replace("\\", "\\\\")):
        lstm_rt.load(path)
