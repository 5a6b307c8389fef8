import io

from ray_app.progress import StatusLine


def test_quiet_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False
    s = StatusLine(1000, stream=out)
    s.update(100)
    s.clear()
    assert out.getvalue() == ""


def test_status_line_shows_steps_rate_eta_and_return():
    out = io.StringIO()
    s = StatusLine(1000, stream=out, enabled=True)
    s.start_time -= 10.0  # 10 s ago
    s.update(0)
    s.window({"return_mean": 12.5})
    s.start_time -= 10.0
    s.update(200)  # 200 steps in this process over ~20 s: ~10 sps, 800 to go: ETA ~80 s
    line = out.getvalue().split("\r")[-1]
    assert "200/1,000 steps, 800 to go" in line and "last return 12.50" in line
    assert " 10 sps" in line and "ETA 1m" in line
    s.clear()
    assert out.getvalue().endswith("\r")
