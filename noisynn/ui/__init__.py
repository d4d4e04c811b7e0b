"""noisynn ui: the browser explorer (Gradio): its app, the Explore tab, setting, controls, figures, curve, saved runs."""
