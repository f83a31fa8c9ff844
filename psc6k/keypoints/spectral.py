"""Spectral clustering of a point set: kNN affinity graph, Laplacian embedding, k-means.

The same three steps as scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")``
(paper Appendix A.1), arranged for a few hundred nodes per sketch and thousands of sketches:

* :func:`knn_affinity` — symmetric 0/1 kNN connectivity ``0.5 * (A + A.T)`` as scikit-learn
  builds it, with the edges that leave the object dropped (affinity follows paths through the
  mask: the paper's geodesic affinity);
* :func:`spectral_embedding` — the ``k`` smallest eigenvectors of the normalised Laplacian by
  shift-invert Lanczos (one banded Cholesky, ARPACK from a seeded start vector), scaled by
  ``D^-1/2`` as scikit-learn does;
* :func:`cluster_embedding` — scikit-learn's ``KMeans`` (k-means++, Lloyd) on the embedding.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

__all__ = ["knn_affinity", "spectral_embedding", "shifted_inverse", "cluster_embedding", "KMEANS_N_INIT"]

#: k-means restarts: 1, scikit-learn's own default for k-means++ (``n_init="auto"``).  On 60
#: benchmark drawings the mean coverage cost is 18.89 px with 1, 18.84 with 3 and 18.82 with 5
#: restarts (0.4%), while each restart costs ~1.4 ms of a ~17 ms sketch.
KMEANS_N_INIT = 1


def knn_affinity(xy: np.ndarray, n_neighbors: int = 10, inside: np.ndarray | None = None
                 ) -> sparse.csr_matrix:
    """Symmetric kNN affinity of points, float64 sparse ``[n, n]``.

    Parameters
    ----------
    xy : float [n, 2]
        Points as (x, y) = (column, row) pixels.
    n_neighbors : int
        Neighbours per point, the point itself included (scikit-learn's convention).
    inside : bool [H, W], optional
        The object; an edge whose midpoint falls outside it is dropped unless that disconnects
        the graph.

    Returns
    -------
    csr_matrix
        ``0.5 * (A + A.T)`` of the 0/1 connectivity ``A`` (self loops included).
    """
    n = xy.shape[0]
    kq = min(n_neighbors, n)
    _, idx = cKDTree(xy).query(xy, k=kq)
    src = np.repeat(np.arange(n), kq)
    dst = idx.ravel()

    def build(sel):
        s_, d_ = (src, dst) if sel is None else (src[sel], dst[sel])
        data = np.full(2 * s_.size, 0.5)  # A + A.T in one COO -> CSR conversion (sums duplicates)
        return sparse.csr_matrix((data, (np.concatenate([s_, d_]), np.concatenate([d_, s_]))),
                                 shape=(n, n))

    if inside is not None:
        mid = 0.5 * (xy[src] + xy[dst])
        mr = np.clip(np.rint(mid[:, 1]).astype(np.intp), 0, inside.shape[0] - 1)
        mc = np.clip(np.rint(mid[:, 0]).astype(np.intp), 0, inside.shape[1] - 1)
        ok = inside[mr, mc] | (src == dst)
        if not ok.all():
            aff = build(ok)
            if csgraph.connected_components(aff, directed=False)[0] == 1:
                return aff
    return build(None)


#: Shift of the shift-invert solve: ARPACK runs on ``(L + SHIFT * I)^-1``.
SHIFT = 1e-3
#: Widest band (in nodes) factored as a band; wider graphs use a sparse LU.  The grid nodes come
#: in raster order, so a kNN edge joins nodes a few cell rows apart: the benchmark's graphs
#: (340-830 nodes) have bandwidths 28-104.
MAX_BANDWIDTH = 128


def spectral_embedding(affinity: sparse.csr_matrix, k: int, seed: int = 0) -> np.ndarray:
    """The ``k`` smallest eigenvectors of the normalised Laplacian, scaled by ``D^-1/2`` (as
    scikit-learn's ``spectral_embedding(drop_first=False)``), sign-fixed; float64 ``[n, k]``.

    Shift-invert Lanczos: ARPACK on ``(L + 1e-3 I)^-1`` (the smallest eigenvalues of ``L``
    become the largest), started from a seeded vector.  The inverse is applied through a
    factorisation made once: a banded Cholesky (LAPACK ``pbtrf``/``pbtrs``) when the graph's
    bandwidth allows, as it does for the grid graphs of :func:`psc6k.keypoints.pseudo_parts`,
    else a sparse LU.  Measured on the graphs of 100 benchmark drawings (332-750 nodes, ARPACK
    included, ``benchmarks/bench_keypoints.py --solvers --n 100``): 1.69 ms per graph with the
    band, 3.40 ms with ``splu``, 4.44 ms with a dense Cholesky, the same embedding to 1e-13;
    dense ``scipy.linalg.eigh(subset_by_index=...)`` took 7.7 ms.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = affinity.shape[0]
    lap, dd = csgraph.laplacian(affinity, normed=True, return_diag=True)
    if n <= 3 * k + 20:
        _, vecs = np.linalg.eigh(np.asarray(sparse.csr_matrix(lap).toarray()))
        vecs = vecs[:, :k]
    else:
        op = LinearOperator((n, n), matvec=shifted_inverse(lap, SHIFT), dtype=np.float64)
        v0 = np.random.RandomState(seed).uniform(-1, 1, n)
        vals, vecs = eigsh(op, k=k, which="LM", v0=v0, tol=1e-6)
        vecs = vecs[:, np.argsort(-vals)]  # largest of the inverse = smallest of L
    emb = vecs / dd[:, None]
    # deterministic sign: largest-magnitude entry of each vector positive
    sign = np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(emb.shape[1])])
    sign[sign == 0] = 1
    return emb * sign


def shifted_inverse(matrix: sparse.spmatrix, shift: float, max_bandwidth: int = MAX_BANDWIDTH):
    """``x -> (matrix + shift * I)^-1 x`` for a symmetric positive semi-definite sparse
    ``[n, n]`` matrix (a graph Laplacian), factored once.

    A banded Cholesky when the nonzeros lie within ``max_bandwidth`` of the diagonal (no
    reordering: the cost is ``n * bandwidth^2``), otherwise (or should the band factorisation
    fail) SciPy's sparse LU.
    """
    from scipy.linalg import get_lapack_funcs

    n = matrix.shape[0]
    coo = sparse.coo_matrix(matrix)
    coo.sum_duplicates()
    upper = coo.row <= coo.col
    rows, cols, vals = coo.row[upper], coo.col[upper], coo.data[upper]
    band = int((cols - rows).max()) if rows.size else 0
    if band <= max_bandwidth:
        # LAPACK upper band storage: ab[band + i - j, j] = A[i, j] for i <= j
        ab = np.zeros((band + 1, n))
        ab[band + rows - cols, cols] = vals
        ab[band] += shift
        pbtrf, pbtrs = get_lapack_funcs(("pbtrf", "pbtrs"), (ab,))
        factor, info = pbtrf(ab, lower=0)
        if info == 0:
            def solve(x):
                return pbtrs(factor, x, lower=0)[0]
            return solve
    from scipy.sparse.linalg import splu

    lu = splu(sparse.csc_matrix(matrix + shift * sparse.identity(n, format="csc")))
    return lu.solve


def cluster_embedding(embedding: np.ndarray, k: int, seed: int = 0,
                      n_init: int = KMEANS_N_INIT) -> np.ndarray:
    """k-means labels int ``[n]`` of an embedding: scikit-learn's ``KMeans`` (k-means++ init,
    Lloyd iterations until convergence), the lowest inertia of ``n_init`` seeded runs.

    Run it inside :func:`psc6k.keypoints.single_threaded` (one OpenMP thread) and, in worker
    processes, from *spawned* workers (:func:`psc6k.parallel.map_ordered`): OpenMP does not
    survive a ``fork`` after the parent used it.  (SciPy's ``kmeans2`` has no convergence test
    and always runs all its iterations: 3x slower here.)
    """
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=n_init, random_state=seed).fit(embedding).labels_.astype(np.intp)
