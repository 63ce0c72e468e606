"""The LM-BFF protocol for masked-LM prompt fine-tuning (the original's medium_models/, after LM-BFF): the template
language, label words, the original data formats, k-shot split generation and data preparation.

The 14 tasks themselves are registered by :mod:`zoft.tasks.lmbff_tasks`.
"""
