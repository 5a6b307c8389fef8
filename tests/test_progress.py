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


def test_window_line_marks_teacher_played_windows_and_keeps_losses_without_ratio_stats():
    from ray_app.recorder import progress_line as _progress_line
    from training.config import TrainConfig

    cfg = TrainConfig(total_env_steps=4000)
    row = {"window_id": 0, "env_steps_total": 2000, "sps": 100.0, "return_mean": 40.0, "episodes_completed": 3,
           "policy_loss": None, "value_loss": 0.25, "entropy": 1.5, "approx_kl": None, "teacher_played": 0.5}
    line = _progress_line(row, cfg)
    assert "return_mean 40.00 (teacher played 50%)" in line
    assert "pg - v 0.2500 ent 1.500 kl -" in line
    played_none = _progress_line({**row, "teacher_played": 0.0, "policy_loss": 0.1, "approx_kl": 0.01}, cfg)
    assert "teacher" not in played_none and "pg 0.1000" in played_none
