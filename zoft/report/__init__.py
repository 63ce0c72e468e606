"""``zoft report``: aggregate run folders the way the paper reports (the original's medium_models/tools/gather_result.py), print a
Markdown table, write CSV, compare with the paper's numbers, and plot."""
