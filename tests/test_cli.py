"""The lstm-rt command, driven through main() and once as a real process."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lstm_rt.cli import main
from util import onnx_style_model, random_layer, sequence_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def lstm_file(tmp_path):
    m = sequence_model(random_layer("LSTM", 4, 6, rng=np.random.default_rng(0)))
    path = tmp_path / "m.lrt"
    m.save(path)
    return m, path


def test_info(lstm_file, capsys):
    _, path = lstm_file
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LSTM" in out and "[?, ?, 4]" in out and "fp32" in out


def test_run_and_stream_equal_model_run(lstm_file, tmp_path):
    m, path = lstm_file
    x = np.random.default_rng(1).normal(size=(9, 2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m.run(x))
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "ys.npy"), "--stream"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "ys.npy"), m.run(x), atol=1e-6)


def test_run_with_named_inputs_writes_npz(tmp_path):
    m = onnx_style_model(random_layer("GRU", 3, 5, rng=np.random.default_rng(2)), layout=1)
    m.save(tmp_path / "g.lrt")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["run", str(tmp_path / "g.lrt"), "--input", f"X={tmp_path / 'x.npy'}", "--output", str(tmp_path / "o.npz")]
    assert main(args) == 0
    out, want = np.load(tmp_path / "o.npz"), m.run({"X": x})
    for k in want:
        np.testing.assert_array_equal(out[k], want[k])
    assert main(args[:-1] + [str(tmp_path / "s.npz"), "--stream"]) == 0
    streamed = np.load(tmp_path / "s.npz")
    for k in want:
        np.testing.assert_allclose(streamed[k], want[k], atol=1e-6)


def test_convert_onnx(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx_cases import make_recurrent_model
    model, _ = make_recurrent_model("LSTM", 3, 5, rng=np.random.default_rng(0))
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.lrt"), "--weights", "int8"]) == 0
    assert main(["info", str(tmp_path / "m.lrt")]) == 0
    assert "int8" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["info", str(tmp_path / "absent.lrt")]) == 2
    assert "lstm-rt: error:" in capsys.readouterr().err
    (tmp_path / "bad.lrt").write_bytes(b"\0" * 200)
    assert main(["info", str(tmp_path / "bad.lrt")]) == 2
    assert "not an lstm_rt model" in capsys.readouterr().err


def test_python_dash_m(lstm_file):
    _, path = lstm_file
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "lstm_rt", "info", str(path)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LSTM" in r.stdout


def test_demo_text_with_the_bundled_model(capsys):
    from lstm_rt.cli import DEMO_MODEL
    from lstm_rt.nextword import NextWordPredictor
    assert os.path.exists(DEMO_MODEL), "the demo model ships inside the package"
    assert main(["demo", "--text", "and god said, let there be li", "-k", "2"]) == 0
    out = capsys.readouterr().out
    p = NextWordPredictor(DEMO_MODEL)
    p.set_text("and god said, let there be li")
    (w1, _), (w2, _) = p.suggest(2)
    assert "completions of 'li':" in out and f"{w1} " in out and f"{w2} " in out


def test_demo_reads_lines_without_a_terminal():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "lstm_rt", "demo"], input="in the beginning \nand the lord\n",
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("> ") for line in r.stdout.splitlines()) == 2 and "next word:" in r.stdout and "completions of 'lord'" in r.stdout


def test_demo_live_in_a_terminal():
    """The interactive demo under a pseudo-terminal: type, see suggestions, Tab accepts one."""
    import pty
    import select
    import time
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo, with the pty as its terminal
        os.execve(sys.executable, [sys.executable, "-m", "lstm_rt", "demo"], env)

    def read_for(seconds):
        out, end = b"", time.time() + seconds
        while time.time() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return out.decode(errors="replace")

    try:
        assert "Tab accepts" in read_for(5)
        os.write(fd, b"and the lo")
        typed = read_for(2)
        assert "and the lo" in typed and "%" in typed          # suggestions with probabilities
        os.write(fd, b"\t")
        accepted = read_for(2)
        os.write(fd, b"\x04")
        read_for(1)
    finally:
        _, status = os.waitpid(pid, 0)
    from lstm_rt.cli import DEMO_MODEL
    from lstm_rt.nextword import NextWordPredictor
    p = NextWordPredictor(DEMO_MODEL)
    p.set_text("and the lo")
    assert f"> and the {p.suggest(1)[0][0]} " in accepted     # Tab took the first suggestion
    assert os.WEXITSTATUS(status) == 0
