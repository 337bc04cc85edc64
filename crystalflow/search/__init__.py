"""Crystal structure search: the common space groups and random symmetric crystals (Z\x27 = 1) to start from."""
