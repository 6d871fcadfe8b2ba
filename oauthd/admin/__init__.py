"""The admin socket: the running daemon answers `oauthd sessions|clients ...` over a Unix
socket (0600) in the state dir.

`views` (what an answer shows), `operations` (what can be done, on the store), `server`
(the daemon's side of the socket) and `client` (the command's side, blocking). Import the
module you need: the command line must not pull in the daemon's side.
"""
