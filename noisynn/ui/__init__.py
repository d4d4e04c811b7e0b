"""noisynn ui, the browser explorer (Gradio): app, Explore tab, setting, controls, figures, curve, saved runs."""
