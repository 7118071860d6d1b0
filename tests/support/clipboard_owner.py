"""An X client that owns the CLIPBOARD and PRIMARY selections with the text in argv[1]:
what a student's program does when it copies. Run inside a display container (python3
and libX11 are there; no xclip), by tests/test_viewer_clipboard_browser.py."""

import ctypes
import sys

X = ctypes.cdll.LoadLibrary("libX11.so.6")
X.XOpenDisplay.restype = ctypes.c_void_p
X.XOpenDisplay.argtypes = [ctypes.c_char_p]
X.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
X.XDefaultRootWindow.restype = ctypes.c_ulong
X.XCreateSimpleWindow.argtypes = (
    [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_int] * 2 + [ctypes.c_uint] * 3 + [ctypes.c_ulong] * 2
)
X.XCreateSimpleWindow.restype = ctypes.c_ulong
X.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
X.XInternAtom.restype = ctypes.c_ulong
X.XSetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
X.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
X.XChangeProperty.argtypes = [
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_int,
]
X.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
X.XFlush.argtypes = [ctypes.c_void_p]


class SelectionRequest(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("owner", ctypes.c_ulong),
        ("requestor", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("target", ctypes.c_ulong),
        ("property", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
    ]


class SelectionNotify(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("requestor", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("target", ctypes.c_ulong),
        ("property", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
    ]


SELECTION_REQUEST, SELECTION_NOTIFY, SELECTION_CLEAR = 30, 31, 29
text = sys.argv[1].encode()
d = X.XOpenDisplay(None)
assert d, "no display"
win = X.XCreateSimpleWindow(d, X.XDefaultRootWindow(d), 0, 0, 1, 1, 0, 0, 0)


def atom(name):
    return X.XInternAtom(d, name, 0)


CLIPBOARD, PRIMARY, UTF8, STRING, TARGETS, ATOM = (
    atom(n) for n in (b"CLIPBOARD", b"PRIMARY", b"UTF8_STRING", b"STRING", b"TARGETS", b"ATOM")
)
for sel in (CLIPBOARD, PRIMARY):
    X.XSetSelectionOwner(d, sel, win, 0)
X.XFlush(d)
print("owner", flush=True)
event = ctypes.create_string_buffer(192)
while True:
    X.XNextEvent(d, event)
    kind = ctypes.c_int.from_buffer(event).value
    if kind != SELECTION_REQUEST:
        continue
    req = SelectionRequest.from_buffer_copy(event)
    prop = req.property or req.target
    if req.target == TARGETS:
        targets = (ctypes.c_ulong * 3)(TARGETS, UTF8, STRING)
        X.XChangeProperty(d, req.requestor, prop, ATOM, 32, 0, targets, 3)
    elif req.target in (UTF8, STRING):
        X.XChangeProperty(d, req.requestor, prop, req.target, 8, 0, text, len(text))
    else:
        prop = 0
    reply = SelectionNotify(
        SELECTION_NOTIFY, 0, 1, d, req.requestor, req.selection, req.target, prop, req.time
    )
    X.XSendEvent(d, req.requestor, 0, 0, ctypes.byref(reply))
    X.XFlush(d)
