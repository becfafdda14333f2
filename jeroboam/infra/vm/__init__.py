"""The ``vm`` infrastructure provider: nodes are QEMU virtual machines (see provider.py)."""
