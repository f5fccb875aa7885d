# CPU image of Fewface. Build: docker build -t fewface .   Run: docker run -p 8080:8080 -v fewface-data:/data fewface
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/opt/torch \
    FEWFACE_MODEL=facenet-vggface2 \
    FEWFACE_DATA_DIR=/data \
    FEWFACE_HOST=0.0.0.0 \
    FEWFACE_PORT=8080 \
    FEWFACE_SHUTDOWN_TIMEOUT=8

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
COPY scripts/install.sh scripts/install.sh
# Same install recipe as CI (scripts/install.sh), so the image's packages are the tested ones.
RUN bash scripts/install.sh

COPY models/ models/
COPY service/ service/
# Bake the VGGFace2 weights into the image at build time; nothing is downloaded at run time.
RUN python -m models.weights fetch facenet-vggface2 && python -m models.weights check dlib-resnet-v1

RUN useradd --system --uid 10001 fewface && mkdir -p /data && chown fewface /data
USER fewface
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
CMD ["python", "-m", "service"]
