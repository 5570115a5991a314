"""BAM and CBAM modules written (for minibam's tests, from scratch) in the layouts found in
public ports; each module's docstring names the layout it follows. tests/test_verify_ports.py
states the verdict verify must give each."""
