"""docs/security.md says SROS2 cannot be tested in the pip world because its Fast DDS lacks the
security plugins. This pins that statement: when a wheel with DDS-Security arrives, this test
fails, and the SROS2 set-up in docs/security.md should then be tested here for real."""
from __future__ import annotations

import subprocess
import sys


def test_the_pip_fast_dds_has_no_security_plugins(tmp_path, python_env):
    (tmp_path / "ks" / "enclaves" / "probe").mkdir(parents=True)
    env = dict(python_env, ROS_SECURITY_ENABLE="true", ROS_SECURITY_STRATEGY="Enforce",
               ROS_SECURITY_KEYSTORE=str(tmp_path / "ks"), ROS_SECURITY_ENCLAVE_OVERRIDE="/probe")
    code = "import rclpy; rclpy.init(); rclpy.create_node('probe'); print('NODE CREATED')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "NODE CREATED" not in text, "this Fast DDS has DDS-Security: test the SROS2 set-up of docs/security.md"
    assert "doesn't have the security libraries" in text, text[-2000:]
