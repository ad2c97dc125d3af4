"""`allmende coordinator top`: a live view of a coordinator for its operators (Textual).

Only this package imports textual on the coordinator side; it talks to the coordinator
over gRPC with the admin token, so it works against a remote coordinator too.
"""
