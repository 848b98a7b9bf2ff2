# The central server: one static binary plus Debian's static busybox, so that
# `docker exec server sh -c "wc -l bets.csv"` works (the course's by-hand check).
# The working directory holds the bets file; the config arrives as a read-only mount.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin SERVER_CONFIG=/config/server.yaml
COPY server /server
WORKDIR /var/lib/loteria
EXPOSE 12345
ENTRYPOINT ["/server"]
