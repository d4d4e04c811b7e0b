"""The analog forward of a layer, as aihwkit computes it: the setting, tiles, the MVM, hooks, presets, compensation, flags."""
