"""Date and time formats for the admin: seconds and the zone everywhere.

The product schedules to the second, so every time the admin shows (lists,
read-only fields, inlines) carries seconds and the time zone it is shown in
(Django's ``T``: "UTC", "CET"). Read through FORMAT_MODULE_PATH, which wins
over Django's own locale formats.
"""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
