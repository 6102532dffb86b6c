"""Column names and CSV headers, defined once for every stage.

The MovieLens names (camelCase, as in the CSV files) are used up to the merge
stage. The prepare stage renames them to the lower-case names below.
"""

# MovieLens names, as in the CSV headers.
USER_ID = "userId"
MOVIE_ID = "movieId"
RATING = "rating"
TIMESTAMP = "timestamp"
TITLE = "title"
GENRES = "genres"
TAG = "tag"
TAGS = "tags"
IMDB_ID = "imdbId"
TMDB_ID = "tmdbId"

# Lower-case names used from the prepare stage on.
USERID = "userid"
MOVIEID = "movieid"
IMDBID = "imdbid"
TMDBID = "tmdbid"
LABEL = "label"
GENRE_INDEX = "genre_index"
SPLIT_BUCKET = "split_bucket"

# The header line each MovieLens CSV file must start with, in order.
CSV_HEADERS: dict[str, tuple[str, ...]] = {
    "ratings": (USER_ID, MOVIE_ID, RATING, TIMESTAMP),
    "movies": (MOVIE_ID, TITLE, GENRES),
    "tags": (USER_ID, MOVIE_ID, TAG, TIMESTAMP),
    "links": (MOVIE_ID, IMDB_ID, TMDB_ID),
}

# Columns of the merged table, one row per rating.
MERGED_COLUMNS = (USER_ID, MOVIE_ID, RATING, TITLE, GENRES, IMDB_ID, TMDB_ID, TIMESTAMP, TAGS)

# Columns of the prepared train and test tables.
PREPARED_COLUMNS = (
    USERID,
    MOVIEID,
    RATING,
    LABEL,
    TIMESTAMP,
    TITLE,
    GENRES,
    GENRE_INDEX,
    IMDBID,
    TMDBID,
    TAGS,
)

# Whole-star classes 0..5 of the reference model; 0 is never a label but the
# one-hot width stays 6 so that train and test always agree.
NUM_CLASSES = 6

# Columns of the index stage's tables.
USER_INDEX = "user_index"
MOVIE_INDEX = "movie_index"
YEAR = "year"
GENRE = "genre"
GENRE_POSITION = "position"
GENRE_MULTI_HOT = "genre_multi_hot"
TRAIN_RATINGS = "train_ratings"
MEAN_RATING = "mean_rating"

# The genres string of a MovieLens movie without genres, which counts as no genre.
NO_GENRES = "(no genres listed)"

# Columns of the movie_index and movie_catalog tables, in order.
MOVIE_INDEX_COLUMNS = (
    MOVIEID,
    MOVIE_INDEX,
    TITLE,
    GENRES,
    IMDBID,
    TMDBID,
    YEAR,
    GENRE_MULTI_HOT,
    TRAIN_RATINGS,
    MEAN_RATING,
)

# Columns of the indexed_fit, indexed_validation and indexed_test tables, in order.
INDEXED_COLUMNS = (
    USER_INDEX,
    MOVIE_INDEX,
    RATING,
    LABEL,
    USERID,
    MOVIEID,
    TIMESTAMP,
    GENRE_INDEX,
)

# Latent factor vectors of the ALS stage's als_user_factors and als_item_factors tables.
FACTORS = "factors"
