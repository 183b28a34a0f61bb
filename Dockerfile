# The lab's image: one `handshake-lab` command, run by docker-compose.yml as the server and
# as the client load. Build: docker build -t handshake-lab .
FROM python:3.11-slim

# ss (iproute2) for the server's kernel sampler; nothing else from apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project without its test tools (pyproject.toml's dependencies only): the packages
# pyproject.toml lists are installed, and .dockerignore keeps everything else out.
COPY . /src
WORKDIR /src
RUN pip install . && cd / && rm -rf /src

# Not root: the lab needs no privilege here. `ss -tanoi` lists TCP sockets through netlink
# (sock_diag), which any user may read for its own network namespace; only `ss -p` (the
# owning processes) and the lab network (`handshake-lab lab`) would need root.
# /certs belongs to that user: an empty named volume mounted there starts as a copy of
# this directory, owner included, so the server can write its certificates into it.
RUN useradd --create-home --uid 10001 lab \
    && mkdir /certs \
    && chown lab:lab /certs
USER lab
WORKDIR /home/lab

# plain HTTP and WebSocket, toy TLS, real TLS, the server's metrics, the client load's metrics
EXPOSE 8080 8443 8444 9464 9465

ENTRYPOINT ["handshake-lab"]
# In a container the server listens on every interface of the container's own network:
# what reaches it from the host is only what `docker run -p` / compose `ports:` publish.
CMD ["server", "--host", "0.0.0.0", "--metrics-host", "0.0.0.0", "--certs-dir", "/certs"]
