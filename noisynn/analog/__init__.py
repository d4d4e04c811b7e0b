"""The analog forward of a layer as aihwkit computes it: setting, tiles, MVM, hooks, presets, compensation, flags."""
