"""Clustering shared by every method that clusters (one k-means, see STYLE.md)."""

from netshrink.cluster.kmeans import KMeansResult, assign_nearest, kmeans
from netshrink.cluster.kmeans1d import assign_nearest_1d, fit_centroids_1d, kmeans_1d, kmeans_1d_exact, kmeans_sse
from netshrink.cluster.metric import assign_nearest_metric, kmeans_metric

__all__ = [
    "KMeansResult",
    "assign_nearest",
    "assign_nearest_metric",
    "kmeans",
    "kmeans_metric",
    "assign_nearest_1d",
    "fit_centroids_1d",
    "kmeans_1d",
    "kmeans_1d_exact",
    "kmeans_sse",
]
