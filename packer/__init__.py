"""llamapack packer: builds, inspects and verifies single-file models."""
