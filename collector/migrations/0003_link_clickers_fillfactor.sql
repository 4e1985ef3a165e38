-- Migration 0003 (c881420): link_clickers at fillfactor 80. A repeated click updates its pair's row; room
-- left on each page lets that be a HOT update, which writes no new index entry. (Pages already full keep
-- their layout until rewritten; new and updated rows get the room.)
ALTER TABLE link_clickers SET (fillfactor = 80);
