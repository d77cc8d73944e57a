"""The command line: fast help without torch, exit codes, one-line errors."""

import subprocess
import sys

from mnistlab.cli import main


def run_cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom mnistlab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for cmd in ['train', 'data', 'evaluate', 'models']:\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stderr.strip().endswith("NO-TORCH"), res.stderr[-500:]
    assert "mnistlab train" in res.stdout


def test_usage_error_exit_2_one_line():
    res = run_cli("train", "--epochs", "abc")
    assert res.returncode == 2
    assert "invalid float value" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("train", "--optimizer", "nope")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "optimizer" in res.stderr


def test_unknown_command_and_no_command():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli().returncode == 2


def test_other_errors_exit_1(tmp_path):
    res = run_cli("evaluate", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert res.stderr.startswith("mnistlab: error:") and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_models_lists_every_registered_model(capsys):
    from mnistlab.models import list_models

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert f"\n{name} " in out
    assert "7,850" in out and "15,910" in out and "569,226" in out


def test_summary_shows_layers(capsys):
    assert main(["summary", "dnn", "--set", "hidden_dims=784,128,128,128"]) == 0
    out = capsys.readouterr().out
    assert "135,562" in out and "BatchNorm1d" in out


def test_summary_unknown_option(capsys):
    assert main(["summary", "dnn", "--set", "hiden_dims=1"]) == 2
    assert "did you mean: hidden_dims" in capsys.readouterr().err.lower()


def test_data_info_and_show_on_made_data(fake_mnist_root, tmp_path, capsys):
    assert main(["data", "info", "--data-dir", str(fake_mnist_root)]) == 0
    out = capsys.readouterr().out
    assert "train 480 + valid 120 (of 600" in out and "test 200" in out
    png = tmp_path / "grid.png"
    assert main(["data", "show", "--data-dir", str(fake_mnist_root), "--n", "12", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "show", "--data-dir", str(fake_mnist_root), "--n", "0", "--out", str(png)]) == 2


def test_data_info_missing_files_is_one_clear_error(tmp_path):
    res = run_cli("data", "info", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    line = res.stderr.strip()
    assert "\n" not in line and "train-images-idx3-ubyte" in line and "mnistlab data download" in line


def test_data_info_real_mnist(real_data_root, capsys):
    assert main(["data", "info", "--data-dir", str(real_data_root)]) == 0
    out = capsys.readouterr().out
    assert "all files verify" in out and "test 10000" in out
    assert "5923" in out and "6742" in out
