"""lenspark: MovieLens ratings through Spark stages into a Keras recommender."""

__version__ = "0.1.0"
