// The add form reads its times in the zone typed in the "Time zone" field: say so beside
// each date and time input as it is typed (the server reads them in that zone either way).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const field = document.getElementById("id_time_zone");
  if (!field) {
    return;
  }
  const update = () => {
    const zone = field.value.trim() || "UTC";
    for (const name of document.querySelectorAll(".zone-note .zone-name")) {
      name.textContent = zone;
    }
    for (const utc of document.querySelectorAll(".zone-note .zone-utc")) {
      utc.hidden = true; // the UTC reading was for the zone the page was drawn in
    }
  };
  field.addEventListener("input", update);
});
