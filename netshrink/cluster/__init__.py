"""Clustering shared by every method that clusters (one k-means, see STYLE.md)."""

from netshrink.cluster.kmeans1d import assign_nearest_1d, kmeans_1d, kmeans_1d_exact, kmeans_sse

__all__ = ["assign_nearest_1d", "kmeans_1d", "kmeans_1d_exact", "kmeans_sse"]
