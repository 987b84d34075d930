"""Image-QA teachers: per-frame answer probabilities for every question (SpARC)."""

from vqacache.featurize.imageqa.registry import get_teacher, list_teachers, teacher_scores
from vqacache.featurize.imageqa.teacher import ImageQATeacher, TeacherQuestion, VocabScores, rank_questions

__all__ = ["ImageQATeacher", "TeacherQuestion", "VocabScores", "get_teacher", "list_teachers", "rank_questions", "teacher_scores"]
