"""`pulse serve`: a local web page for PULSE (Gradio), offline."""
