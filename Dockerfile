# Fewface. Two images from this one recipe (and the same scripts/install.sh as CI):
#   CPU (default, PyTorch's CPU-only wheels, about 1.2 GB):
#     docker build -t fewface .
#     docker run -p 8080:8080 -v fewface-data:/data fewface
#   CUDA (PyPI's CUDA build of torch with its nvidia-* libraries, about 6 GB; needs the NVIDIA container toolkit):
#     docker build --build-arg TORCH_VARIANT=cuda -t fewface:cuda .
#     docker run --gpus all -p 8080:8080 -v fewface-data:/data fewface:cuda
# Both serve dlib-resnet-v1 (its weights come with requirements.txt). To bake facenet weights in
# (their accuracy is not measured by this project): --build-arg FACENET_WEIGHTS=facenet-vggface2
# (or "facenet-vggface2 facenet-casia"), then run with -e FEWFACE_MODEL=facenet-vggface2.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ARG FACENET_WEIGHTS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/opt/torch \
    FEWFACE_MODEL=dlib-resnet-v1 \
    FEWFACE_DATA_DIR=/data \
    FEWFACE_HOST=0.0.0.0 \
    FEWFACE_PORT=8080 \
    FEWFACE_SHUTDOWN_TIMEOUT=8

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
COPY scripts/install.sh scripts/install.sh
# Same install recipe as CI (scripts/install.sh), so the image's packages are the tested ones.
RUN TORCH_VARIANT="$TORCH_VARIANT" bash scripts/install.sh

COPY models/ models/
COPY service/ service/
# Nothing is downloaded at run time: dlib-resnet-v1's weights are installed, facenet's only when asked for.
RUN python -m models.weights check dlib-resnet-v1 && for m in $FACENET_WEIGHTS; do python -m models.weights fetch "$m"; done

RUN useradd --system --uid 10001 fewface && mkdir -p /data && chown fewface /data
USER fewface
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
CMD ["python", "-m", "service"]
