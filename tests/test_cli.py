"""The lstm-rt command, driven through main() and once as a real process."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lstm_rt.cli import main
from util import language_model, onnx_style_model, random_layer, sequence_model

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


def _stream_equals_run(m, tmp_path, inputs):
    """`lstm-rt run --stream` on m saved to .lrt equals m.run on the same inputs."""
    m.save(tmp_path / "m.lrt")
    args = []
    for name, a in inputs.items():
        np.save(tmp_path / f"{name or 'x'}.npy", a)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}" if name else str(tmp_path / "x.npy")]
    assert main(["run", str(tmp_path / "m.lrt"), *args, "--output", str(tmp_path / "s.npz"), "--stream"]) == 0
    want = m.run(inputs if None not in inputs else inputs[None])
    want = want if isinstance(want, dict) else {m.outputs[0].name: want}
    got = np.load(tmp_path / "s.npz")
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_stream_of_a_converted_torch_module_equals_run(cls, batch_first, tmp_path):
    torch = pytest.importorskip("torch")
    from converters import from_torch
    torch.manual_seed(0)
    m = from_torch(getattr(torch.nn, cls)(4, 5, num_layers=2, batch_first=batch_first))
    x = np.random.default_rng(1).normal(size=(7, 3, 4)).astype(np.float32)   # T != B
    _stream_equals_run(m, tmp_path, {None: x})


@pytest.mark.parametrize("layout", [0, 1])
def test_stream_of_an_onnx_style_lstm_equals_run(layout, tmp_path):
    """Y [T, D, B, H] (or [B, T, D, H]) stacked per step; Y_h, Y_c the final states."""
    m = onnx_style_model(random_layer("LSTM", 4, 5, rng=np.random.default_rng(2)), layout=layout)
    x = np.random.default_rng(3).normal(size=(7, 3, 4)).astype(np.float32)
    _stream_equals_run(m, tmp_path, {"X": x})


def test_stream_of_a_next_word_model_equals_run(tmp_path):
    m = language_model(["<unk>", ".", "a", "b", "c", "d"])
    ids = np.random.default_rng(4).integers(0, 6, size=(9, 2))
    _stream_equals_run(m, tmp_path, {None: ids})


def test_convert_onnx(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx_cases import make_recurrent_model
    model, _ = make_recurrent_model("LSTM", 3, 5, rng=np.random.default_rng(0))
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.lrt"), "--weights", "int8"]) == 0
    assert main(["info", str(tmp_path / "m.lrt")]) == 0
    assert "int8" in capsys.readouterr().out


def _write_files(d):
    """The files the error cases below point the CLI at."""
    import io

    from numpy.lib import format as npy_format
    rng = np.random.default_rng(0)
    m = sequence_model(random_layer("LSTM", 4, 6, rng=rng))
    m.save(d / "m.lrt")
    m.quantized("int8").save(d / "m8.lrt")
    onnx_style_model(random_layer("GRU", 4, 5, rng=rng)).save(d / "g.lrt")
    np.save(d / "x.npy", rng.normal(size=(5, 2, 4)).astype(np.float32))
    np.save(d / "x2d.npy", np.zeros((5, 4), np.float32))
    np.save(d / "x0.npy", np.zeros((0, 2, 4), np.float32))
    np.save(d / "lens.npy", np.array([5, 3], np.int32))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "x.npz", x=np.zeros((5, 2, 4), np.float32))
    (d / "garbage.npy").write_bytes(np.random.default_rng(1).bytes(300))
    (d / "empty.npy").write_bytes(b"")
    (d / "truncated.npy").write_bytes((d / "x.npy").read_bytes()[:140])
    header = io.BytesIO()   # a header claiming 2**40 floats (4 TiB) over 64 bytes of data
    npy_format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    (d / "claims_4tib.npy").write_bytes(header.getvalue() + bytes(64))
    (d / "garbage.lrt").write_bytes(np.random.default_rng(2).bytes(300))
    (d / "garbage.onnx").write_bytes(np.random.default_rng(3).bytes(300))
    (d / "notes.txt").write_text("not a model")
    (d / "a_dir").mkdir()
    try:
        import h5py
    except ImportError:
        return
    giant_keras_h5(d / "giant.h5", kernel_rows=2**45)


def giant_keras_h5(path, kernel_rows):
    """A legacy Keras .h5 (Input -> LSTM 4) whose kernel dataset declares kernel_rows x 16
    floats (2 PiB for 2**45 rows) in a 10 KB file: chunked storage with nothing written."""
    import json

    import h5py
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, None, 3], "name": "in"}},
        {"class_name": "LSTM", "config": {"name": "lstm", "units": 4, "activation": "tanh",
                                          "recurrent_activation": "sigmoid", "use_bias": True}}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "3.15.1"
        g = f.create_group("model_weights/lstm")
        names = ["lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"]
        g.attrs["weight_names"] = names
        g.create_dataset(names[0], shape=(kernel_rows, 16), dtype="f4", chunks=(1, 16))
        g.create_dataset(names[1], data=np.zeros((4, 16), np.float32))
        g.create_dataset(names[2], data=np.zeros(16, np.float32))


USER_ERRORS = {   # case -> (argv with {d} for the files' folder, a word the message must hold)
    "stream-unknown-input-name": ("run {d}/m.lrt --input Bogus={d}/x.npy --output {d}/y.npy --stream", "Bogus"),
    "stream-wrong-rank": ("run {d}/m.lrt --input {d}/x2d.npy --output {d}/y.npy --stream", "rank 3"),
    "stream-zero-steps": ("run {d}/m.lrt --input {d}/x0.npy --output {d}/y.npy --stream", "x0.npy"),
    "stream-lengths": ("run {d}/g.lrt --input X={d}/x.npy --input sequence_lens={d}/lens.npy "
                       "--output {d}/y.npz --stream", "sequence_lens"),
    "unknown-input-name": ("run {d}/m.lrt --input Bogus={d}/x.npy --output {d}/y.npy", "Bogus"),
    "wrong-rank": ("run {d}/m.lrt --input {d}/x2d.npy --output {d}/y.npy", "rank"),
    "missing-npy": ("run {d}/m.lrt --input {d}/absent.npy --output {d}/y.npy", "absent.npy"),
    "garbage-npy": ("run {d}/m.lrt --input {d}/garbage.npy --output {d}/y.npy", "garbage.npy"),
    "empty-npy": ("run {d}/m.lrt --input {d}/empty.npy --output {d}/y.npy", "empty.npy"),
    "truncated-npy": ("run {d}/m.lrt --input {d}/truncated.npy --output {d}/y.npy", "truncated.npy"),
    "npy-claiming-4tib": ("run {d}/m.lrt --input {d}/claims_4tib.npy --output {d}/y.npy", "claims_4tib.npy"),
    "pickled-npy": ("run {d}/m.lrt --input {d}/objects.npy --output {d}/y.npy", "objects.npy"),
    "npz-input": ("run {d}/m.lrt --input {d}/x.npz --output {d}/y.npy", "x.npz"),
    "input-is-a-directory": ("run {d}/m.lrt --input {d}/a_dir --output {d}/y.npy", "a_dir"),
    "run-garbage-model": ("run {d}/garbage.lrt --input {d}/x.npy --output {d}/y.npy", "garbage.lrt"),
    "info-garbage-model": ("info {d}/garbage.lrt", "garbage.lrt"),
    "info-unsupported-suffix": ("info {d}/notes.txt", "notes.txt"),
    "convert-unsupported-suffix": ("convert {d}/notes.txt -o {d}/o.lrt", "notes.txt"),
    "convert-refused-source": ("convert {d}/garbage.onnx -o {d}/o.lrt", "garbage.onnx"),
    "convert-giant-h5": ("convert {d}/giant.h5 -o {d}/o.lrt", "giant.h5"),
    "convert-int8-to-fp16": ("convert {d}/m8.lrt -o {d}/o.lrt --weights fp16", "int8"),
    "convert-to-a-directory": ("convert {d}/m.lrt -o {d}/a_dir", "a_dir"),
    "output-is-a-directory": ("run {d}/m.lrt --input {d}/x.npy --output {d}/a_dir", "a_dir"),
    "missing-argument": ("run {d}/m.lrt --input {d}/x.npy", "--output"),
    "demo-negative-k": ("demo --text hello -k -1", "k must be"),
    "demo-garbage-model": ("demo --text hello --model {d}/garbage.lrt", "garbage.lrt"),
}


@pytest.fixture(scope="module")
def error_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    _write_files(d)
    return d


def _one_error_line(code, err, word):
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("lstm-rt: error: "), err
    assert word in lines[0], err


@pytest.mark.parametrize("case", USER_ERRORS)
@pytest.mark.parametrize("how", ["main", "process"])
def test_a_user_error_is_one_line_and_exit_code_2(case, how, error_files, capsys):
    argv, word = USER_ERRORS[case]
    if case == "convert-giant-h5" and not (error_files / "giant.h5").exists():
        pytest.skip("needs h5py")
    argv = argv.format(d=error_files).split()
    if how == "main":
        code, err = main(argv), capsys.readouterr().err
    else:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, "-m", "lstm_rt", *argv], capture_output=True, text=True,
                           env=env, timeout=300)
        code, err = r.returncode, r.stderr
    _one_error_line(code, err, word)
    assert not (error_files / "a_dir.npy").exists() and not os.listdir(error_files / "a_dir")


def test_out_of_memory_is_one_line(lstm_file, tmp_path, monkeypatch, capsys):
    import lstm_rt.cli

    def exhausted(path):
        raise MemoryError("Unable to allocate 2.00 PiB for an array with shape (2**45, 16)")
    monkeypatch.setattr(lstm_rt.cli, "load", exhausted)
    _one_error_line(main(["info", str(lstm_file[1])]), capsys.readouterr().err, "out of memory")


def test_output_paths_say_what_was_written(lstm_file, tmp_path, capsys):
    """np.save appends .npy (np.savez .npz): the message names the file really written."""
    m, path = lstm_file
    x = np.random.default_rng(1).normal(size=(3, 2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = ["run", str(path), "--input", str(tmp_path / "x.npy"), "--output"]
    assert main(run + [str(tmp_path / "y")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"to {tmp_path / 'y.npy'}")
    assert not (tmp_path / "y").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m.run(x))
    assert main(run + [str(tmp_path / "one.npz")]) == 0          # one output into an .npz: by name
    assert capsys.readouterr().out.strip().endswith(f"to {tmp_path / 'one.npz'}")
    np.testing.assert_array_equal(np.load(tmp_path / "one.npz")[m.outputs[0].name], m.run(x))
    g = onnx_style_model(random_layer("LSTM", 4, 3, rng=np.random.default_rng(2)))
    g.save(tmp_path / "g.lrt")
    assert main(["run", str(tmp_path / "g.lrt"), "--input", f"X={tmp_path / 'x.npy'}",
                 "--output", str(tmp_path / "several")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"to {tmp_path / 'several.npz'}")
    assert set(np.load(tmp_path / "several.npz")) == {"Y", "Y_h", "Y_c"}


def test_convert_a_model_file_to_other_weights(lstm_file, tmp_path, capsys):
    m, path = lstm_file
    assert main(["convert", str(path), "-o", str(tmp_path / "m8.lrt"), "--weights", "int8"]) == 0
    assert "int8 weights" in capsys.readouterr().out
    import lstm_rt
    m8 = lstm_rt.load(tmp_path / "m8.lrt")
    assert m8.weights == "int8"
    x = np.random.default_rng(1).normal(size=(3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(m8.run(x), m.quantized("int8").run(x))
    assert main(["convert", str(tmp_path / "m8.lrt"), "-o", str(tmp_path / "again.lrt")]) == 0   # keeps int8
    assert lstm_rt.load(tmp_path / "again.lrt").weights == "int8"


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
