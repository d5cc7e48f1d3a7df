"""lstm_rt.progress: the bar long work draws on a terminal."""
import io

from lstm_rt.progress import Progress


def test_progress_bar_draws_on_request_and_stays_silent_otherwise():
    buf = io.StringIO()
    with Progress(4, "work", enabled=True, file=buf) as bar:
        for _ in range(4):
            bar.update(1, loss="0.5")
    last = buf.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("work [") and "100% 4/4" in last and "loss=0.5" in last
    quiet = io.StringIO()      # not a terminal: nothing drawn
    with Progress(4, "work", file=quiet) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""
