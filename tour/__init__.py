"""The guided tour (`handshake-lab demo`): the syllabus's lessons, one after another.

Theory of operation: one real server on loopback (plain HTTP and WebSocket, the toy TLS,
real TLS) and one bus, whose events feed the JSON log, the metrics and the lessons alike.
Each lesson (`tour.tour.Lesson`) says what is about to happen and what to look at, runs
real traffic with the lab's client while `ss` samples the kernel's sockets, draws the
ladder from both ends' events (client/trace.py) and ends with findings computed from the
events. As root the wire lessons (netlab's scenarios) follow, with the real segments.
"""
