"""Our own MTCNN cascade over facenet-pytorch's P-, R- and O-Net modules (weights from its wheel).

facenet-pytorch's ``detect_face`` scans the whole image pyramid down from a 20 px face, however
large the photo, and spends much of its time in per-candidate Python. This module runs the same
three networks and the same box arithmetic with three changes:

* **A pyramid that starts at a minimum face size relative to the image.** P-Net scans the image
  as if its longer side were at most ``detect_side`` pixels: on a bigger image the smallest face
  looked for grows in proportion (``min_face_size * longer side / detect_side``). The levels kept
  are exactly the stock pyramid's levels (same scales, same area resampling of the full image),
  minus the largest ones, so the candidates for the faces that remain in range are the stock
  candidates. R-Net and O-Net then refine them on crops of the **full-resolution** image, so boxes
  and landmarks keep full-resolution precision.
* **Bounded work per image.** At most ``max_rnet`` candidates (best P-Net score first) enter
  R-Net and ``max_onet`` enter O-Net, so an image tiled with thousands of faces costs a bounded
  amount of time and memory instead of growing with the number of faces.
* **No per-candidate round trips.** Box arithmetic stays in torch on the device; crops of all
  images of a batch go through R-Net / O-Net in one pass each.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from PIL import Image
from torchvision.ops import batched_nms

FACTOR = 0.709  # pyramid step, as in facenet-pytorch and the original MTCNN


@dataclass(frozen=True)
class CascadeLimits:
    """Bounds on the work done per image (see the module doc)."""

    min_face_size: int = 20
    detect_side: int = 640  # 0: scan the full-resolution pyramid, as stock MTCNN does
    max_rnet: int = 1000
    max_onet: int = 200


@dataclass
class RawFaces:
    """One image's faces: boxes (n, 4), probabilities (n,), landmarks (n, 5, 2), float numpy."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray
    capped: bool = False  # a candidate cap dropped candidates on this image


def pyramid_scales(height: int, width: int, limits: CascadeLimits) -> list[float]:
    """The stock pyramid's scales (from ``12 / min_face_size`` down by ``FACTOR`` while the shorter
    side stays >= 12 px), without the levels larger than ``detect_side`` allows."""
    m = 12.0 / limits.min_face_size
    scales, scale, minl = [], m, min(height, width) * m
    while minl >= 12:
        scales.append(scale)
        scale *= FACTOR
        minl *= FACTOR
    if limits.detect_side > 0:
        largest = m * limits.detect_side / max(height, width)
        scales = [s for s in scales if s <= largest * (1 + 1e-9)]
    return scales


class FastPNet(torch.nn.Module):
    """facenet-pytorch's P-Net, same weights and the same outputs, arranged for the CPU:

    * its first layer's 10 output channels are padded to 16 with zero filters (and zero-weight
      inputs in the next layer): torch's PReLU and max-pooling on channels-last tensors have a
      vectorised path only for channel counts that fill SIMD lanes, 3-4x faster here;
    * its two 1x1 output convolutions are one matrix product over the channels-last features.

    ``forward`` returns (box offsets (N, 4, h, w), face probability (N, h, w)).
    """

    def __init__(self, pnet: PNet) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3)
        self.prelu1 = torch.nn.PReLU(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3)
        self.prelu2, self.conv3, self.prelu3 = pnet.prelu2, pnet.conv3, pnet.prelu3
        self.head = torch.nn.Linear(32, 6)
        with torch.no_grad():
            for padded, layer in ((self.conv1, pnet.conv1), (self.prelu1, pnet.prelu1)):
                padded.weight.zero_()
                padded.weight[: len(layer.weight)] = layer.weight
            self.conv1.bias.zero_()
            self.conv1.bias[:10] = pnet.conv1.bias
            self.conv2.weight.zero_()
            self.conv2.weight[:, :10] = pnet.conv2.weight
            self.conv2.bias.copy_(pnet.conv2.bias)
            self.head.weight.copy_(torch.cat([pnet.conv4_1.weight, pnet.conv4_2.weight]).flatten(1))
            self.head.bias.copy_(torch.cat([pnet.conv4_1.bias, pnet.conv4_2.bias]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        out = self.head(x.permute(0, 2, 3, 1))  # (N, h, w, 6): 2 class logits, 4 box offsets
        return out[..., 2:].permute(0, 3, 1, 2), torch.softmax(out[..., :2], dim=-1)[..., 1]


class Cascade(torch.nn.Module):
    """P-Net over a pyramid, then R-Net and O-Net on full-resolution crops."""

    def __init__(self, device: torch.device, thresholds: tuple[float, float, float], limits: CascadeLimits) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = FastPNet(PNet()), RNet(), ONet()
        self.thresholds = thresholds
        self.limits = limits
        self.device = device
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()
        self.to(device).eval()

    @torch.inference_mode()
    def forward(self, images: list[Image.Image]) -> list[RawFaces]:
        """Faces in each RGB image; the images of one call must share their size."""
        if not images:
            return []
        sums = _integral(images)
        boxes, owner = self._propose(sums)
        capped = torch.zeros(len(images), dtype=torch.bool)
        boxes, owner = self._cap(boxes, owner, self.limits.max_rnet, capped)
        boxes, owner = self._refine(sums, boxes, owner)
        boxes, owner = self._cap(boxes, owner, self.limits.max_onet, capped)
        boxes, owner, points = self._output(sums, boxes, owner)
        boxes_np, points_np, owner_np = boxes.cpu().numpy(), points.cpu().numpy(), owner.cpu().numpy()
        out = []
        for i in range(len(images)):
            sel = owner_np == i
            out.append(RawFaces(boxes_np[sel, :4], boxes_np[sel, 4], points_np[sel], bool(capped[i])))
        return out

    # -- stage 1: P-Net over the pyramid ---------------------------------------------------
    def _propose(self, sums: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        n, height, width = sums.shape[0], sums.shape[1] - 1, sums.shape[2] - 1
        levels = list(enumerate(pyramid_scales(height, width, self.limits)))
        found, groups = [], []
        for level, boxes, owner in self._scan(sums, levels):
            found.append(boxes)
            groups.append(owner + level * n)
        if not found:
            return torch.zeros(0, 9, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        boxes, group = torch.cat(found), torch.cat(groups)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], group, 0.5)  # each level of each image on its own, as stock
        boxes, owner = boxes[keep], group[keep] % n
        keep = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.7)
        boxes, owner = boxes[keep], owner[keep]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        x1, y1 = boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h
        x2, y2 = boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h
        refined = torch.stack([x1, y1, x2, y2, boxes[:, 4]], dim=1)
        return _square(refined), owner

    def _scan(self, sums: np.ndarray, levels: list[tuple[int, float]]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """P-Net's candidates on each (index, scale) level, in level order. On the CPU with several
        intra-op threads (a batch that runs alone), the levels are shared out among that many
        threads of one intra-op thread each instead: the pyramid's levels are independent, and
        whole levels side by side keep every core busy through the numpy work between the
        convolutions, which intra-op threads leave to one core (docs/performance.md)."""
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads < 2 or len(levels) < 2:
            return self._scan_levels(sums, levels)
        height, width = sums.shape[1] - 1, sums.shape[2] - 1
        shares: list[list[tuple[int, float]]] = [[] for _ in range(min(threads, len(levels)))]
        load = [0.0] * len(shares)
        for level in levels:  # largest first, each to the least loaded thread
            i = load.index(min(load))
            shares[i].append(level)
            load[i] += height * width * level[1] ** 2
        pool = self._level_pool(len(shares) - 1)
        others = [pool.submit(self._scan_levels_alone, sums, share) for share in shares[1:]]
        torch.set_num_threads(1)
        try:
            mine = self._scan_levels(sums, shares[0])
        finally:
            torch.set_num_threads(threads)
        return sorted(mine + [found for f in others for found in f.result()], key=lambda found: found[0])

    def _scan_levels(self, sums: np.ndarray, levels: list[tuple[int, float]]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        height, width = sums.shape[1] - 1, sums.shape[2] - 1
        out = []
        for level, scale in levels:
            rows = _bins(np.zeros(1, np.int64), np.full(1, height), int(height * scale + 1))
            cols = _bins(np.zeros(1, np.int64), np.full(1, width), int(width * scale + 1))
            reg, probs = self.pnet(self._tensor(_level(sums, rows, cols)))
            out.append((level, *_grid_boxes(reg, probs, scale, self.thresholds[0])))
        return out

    @torch.inference_mode()
    def _scan_levels_alone(self, sums: np.ndarray, levels: list[tuple[int, float]]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        torch.set_num_threads(1)  # this pool thread's own count
        return self._scan_levels(sums, levels)

    def _level_pool(self, workers: int) -> ThreadPoolExecutor:
        """Threads that scan pyramid levels beside the caller (made on first use; replaced by a larger
        pool when more are needed: a caller may still hold the old one, whose idle threads end once
        it is no longer referenced)."""
        with self._pool_lock:
            if self._pool is None or self._pool_size < workers:
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fewface-pnet")
                self._pool_size = workers
            return self._pool

    # -- stage 2: R-Net --------------------------------------------------------------------
    def _tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) float pixel values -> normalised (N, 3, H, W) on the device, channels_last
        (the networks' max-pooling is several times faster in that layout on CPU)."""
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)
        return ((x - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)

    def _refine(self, sums: np.ndarray, boxes: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(boxes) == 0:
            return boxes, owner
        crops, boxes, owner = _crops(sums, boxes, owner, 24)
        if len(crops) == 0:
            return boxes[:, :5], owner
        reg, probs = self.rnet(self._tensor(crops))
        score = probs[:, 1]
        ok = score > self.thresholds[1]
        boxes = torch.cat([boxes[ok, :4], score[ok, None]], dim=1)
        owner, reg = owner[ok], reg[ok]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.7)
        return _square(_regress(boxes[keep], reg[keep])), owner[keep]

    # -- stage 3: O-Net --------------------------------------------------------------------
    def _output(self, sums: np.ndarray, boxes: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(boxes) == 0:
            return torch.zeros(0, 5, device=self.device), owner, torch.zeros(0, 5, 2, device=self.device)
        crops, boxes, owner = _crops(sums, boxes, owner, 48)
        if len(crops) == 0:
            return boxes[:, :5], owner, torch.zeros(0, 5, 2, device=self.device)
        reg, marks, probs = self.onet(self._tensor(crops))
        score = probs[:, 1]
        ok = score > self.thresholds[2]
        boxes = torch.cat([boxes[ok, :4], score[ok, None]], dim=1)
        owner, reg, marks = owner[ok], reg[ok], marks[ok]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = torch.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:10] + boxes[:, 1:2] - 1], dim=2)
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, owner, 0.7)
        return boxes[keep], owner[keep], points[keep]

    @staticmethod
    def _cap(boxes: torch.Tensor, owner: torch.Tensor, most: int, capped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """At most ``most`` candidates per image, the best-scoring ones."""
        if len(boxes) <= most:
            return boxes, owner
        keep = []
        for i in owner.unique().tolist():
            idx = (owner == i).nonzero().flatten()
            if len(idx) > most:
                capped[i] = True
                idx = idx[boxes[idx, 4].topk(most).indices]
            keep.append(idx)
        kept = torch.cat(keep)
        return boxes[kept], owner[kept]


def _grid_boxes(reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net's output cells above ``threshold`` as (x1, y1, x2, y2, score, 4 offsets) in image pixels,
    in row-major (image, y, x) order."""
    stride, cell = 2, 12
    _, height, width = probs.shape
    flat = probs.reshape(-1)
    index = (flat >= threshold).nonzero().flatten()
    offsets = reg.permute(0, 2, 3, 1).reshape(-1, 4)[index]
    owner, within = index // (height * width), index % (height * width)
    yx = torch.stack([within % width, within // width], dim=1).to(reg.dtype)  # (x, y) of each cell
    q1 = ((stride * yx + 1) / scale).floor()
    q2 = ((stride * yx + cell - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, flat[index, None], offsets], dim=1), owner


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square around its centre (its longer side), as MTCNN's ``rerec``."""
    boxes = boxes.clone()
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    boxes = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += reg[:, 0] * w
    boxes[:, 1] += reg[:, 1] * h
    boxes[:, 2] += reg[:, 2] * w
    boxes[:, 3] += reg[:, 3] * h
    return boxes


def _integral(images: list[Image.Image]) -> np.ndarray:
    """Summed-area tables (N, H + 1, W + 1, 3) of equal-size RGB images: any box's pixel sum in
    four look-ups, so every pyramid level and every crop is an exact area average without
    touching the full image again."""
    width, height = images[0].size
    dtype = np.int32 if height * width * 255 < 2**31 else np.int64
    sums = np.zeros((len(images), height + 1, width + 1, 3), dtype)
    for i, image in enumerate(images):
        table = sums[i, 1:, 1:]
        table[...] = np.asarray(image)
        # running sum down the rows, one whole row at a time (numpy's cumsum over axis 0 of this
        # layout walks it column by column, 8x slower), then along each row
        for y in range(1, height):
            np.add(table[y - 1], table[y], out=table[y])
        np.cumsum(table, axis=1, out=table)
    return sums


def _bins(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of torch's adaptive average pooling (its "area" resize) of ranges [start, stop)
    into ``size`` bins: bin i covers [floor(i L / size), ceil((i + 1) L / size)), L = stop - start."""
    length = (stop - start)[:, None]
    i = np.arange(size)[None, :]
    return start[:, None] + (i * length) // size, start[:, None] - ((-(i + 1) * length) // size)


def _cells(sums: np.ndarray) -> np.ndarray:
    """The tables as one flat array of whole pixels (each pixel's three channel sums one item),
    so a gather moves a pixel at a time."""
    return sums.reshape(-1, 3).view(np.dtype((np.void, 3 * sums.itemsize))).reshape(-1)


def _pooled(sums: np.ndarray, owner: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(n, size_y, size_x, 3) float32 area averages: region k of image ``owner[k]`` binned by
    ``rows`` (n, size_y) and ``cols`` (n, size_x) edges (torch's "area" resize, exactly), from
    four table look-ups per pixel."""
    (r0, r1), (c0, c1) = rows, cols
    _, height, width, _ = sums.shape  # height and width of the tables: one more than the image's
    cells = _cells(sums)
    n, sy, sx = len(owner), r0.shape[1], c0.shape[1]
    base = (owner * (height * width))[:, None, None]
    top, bottom = base + r0[:, :, None] * width, base + r1[:, :, None] * width
    left, right = c0[:, None, :], c1[:, None, :]

    def corner(index: np.ndarray) -> np.ndarray:
        return np.take(cells, index).view(sums.dtype).reshape(n, sy, sx, 3)

    total = corner(bottom + right)
    total -= corner(top + right)
    total -= corner(bottom + left)
    total += corner(top + left)  # exact: every sum fits the table's dtype
    out = total.astype(np.float32)
    out /= ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).astype(np.float32)[..., None]
    return out


def _level(sums: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A whole pyramid level, (N, size_y, size_x, 3) float32: every image binned by the same
    ``rows`` (1, size_y) and ``cols`` (1, size_x) edges. The bins are separable, so the table's
    bin rows are gathered (whole rows, contiguous) and differenced first, then their bin columns."""
    (r0, r1), (c0, c1) = (rows[0][0], rows[1][0]), (cols[0][0], cols[1][0])
    band = np.take(sums, r1, axis=1)
    band -= np.take(sums, r0, axis=1)  # (N, size_y, W + 1, 3): sums over each row bin, cumulated along the row
    total = np.take(band, c1, axis=2)
    total -= np.take(band, c0, axis=2)  # exact: every sum fits the table's dtype
    out = total.astype(np.float32)
    out /= ((r1 - r0)[:, None] * (c1 - c0)[None, :]).astype(np.float32)[None, :, :, None]
    return out


def _crops(sums: np.ndarray, boxes: torch.Tensor, owner: torch.Tensor, size: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Each box's pixels (clipped to the image, as MTCNN's ``pad``) area-resampled to size x size
    from the full-resolution image, (n, size, size, 3) float32; boxes left empty by the clipping
    are dropped (with their rows)."""
    height, width = sums.shape[1] - 1, sums.shape[2] - 1
    b = boxes[:, :4].trunc().int().cpu().numpy().astype(np.int64)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    valid = (ey > y - 1) & (ex > x - 1)
    x, y, ex, ey = x[valid], y[valid], ex[valid], ey[valid]
    crops = _pooled(sums, owner.cpu().numpy()[valid], _bins(y - 1, ey, size), _bins(x - 1, ex, size))
    keep = torch.from_numpy(valid).to(boxes.device)
    return crops, boxes[keep], owner[keep]


def _nms_min(boxes: torch.Tensor, owner: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS per image with overlap = intersection / smaller area (MTCNN's last step)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    b = boxes.double().cpu().numpy()
    o = owner.cpu().numpy()
    shift = (b[:, :4].max() + 1) * o  # boxes of different images never overlap
    x1, y1, x2, y2 = b[:, 0] + shift, b[:, 1] + shift, b[:, 2] + shift, b[:, 3] + shift
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(b[:, 4], kind="stable")
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)
