"""Evaluation: answer extraction, equivalence grading, metrics, backends, robustness sets, reports.

Every module here keeps heavy imports (torch, transformers, vllm, sympy) inside functions.
"""
