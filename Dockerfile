# endcloud on the CPU: the OpenAI-compatible chat server, its chat widget, /review and /dashboard.
#
#   docker build -t endcloud:0.1.0 .
#   docker run --rm -v endcloud-work:/work endcloud:0.1.0 shop onboard /work/shop   # build what it serves
#   docker run -d -p 8000:8000 -v endcloud-work:/work \
#       -e ENDCLOUD_SERVE_ADMIN_TOKEN="$(openssl rand -hex 32)" endcloud:0.1.0      # serve it
#
# or `docker compose up -d` (compose.yaml; docs/deploy.md). The workspace is the volume /work:
# models, adapters, the SQLite store, the audit log and endcloud.toml outlive the container.
# Tested here: tests/test_container.py lints this file (docker is not run in the tests).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch FIRST and from the CPU index: anything installed before it would pull a CUDA build of a
# newer torch (~2.9 GB of CUDA wheels). The version is the one pyproject.toml pins.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
# the full pinned set next (its own layer: source edits do not reinstall it)
COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY endcloud /src/endcloud
RUN pip install --no-deps /src && python -c "import endcloud.cli"

FROM ${PYTHON_IMAGE}
# a fixed uid, so the volume's files have the same owner on every rebuild
RUN useradd --create-home --uid 10001 --user-group endcloud \
    && mkdir -p /work && chown endcloud:endcloud /work
COPY --from=build /opt/venv /opt/venv
# settings: a flag > these variables > /work/endcloud.toml > defaults (`endcloud config show`)
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENDCLOUD_HOME=/work \
    ENDCLOUD_DEVICE=cpu \
    ENDCLOUD_SERVE_HOST=0.0.0.0 \
    ENDCLOUD_SERVE_PORT=8000
VOLUME ["/work"]
WORKDIR /work
USER endcloud
EXPOSE 8000
# ready = the end model has generated once (/readyz); the start period covers loading it
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ENDCLOUD_SERVE_PORT', '8000'), timeout=4); sys.exit(r.status != 200)"]
ENTRYPOINT ["endcloud"]
# listening beyond loopback needs an admin token (ENDCLOUD_SERVE_ADMIN_TOKEN): serve refuses to start without one
CMD ["serve"]
