import subprocess


def test_binaries_print_version(ringway_bin, mock_bin):
    for binary in (ringway_bin, mock_bin):
        completed = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        assert completed.returncode == 0
