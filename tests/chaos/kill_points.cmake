# The kill points compiled into the library, read from its sources (every
# kill_point("name") call), so that each gets a test; sources added or edited
# re-run the configure. Used by the chaos tests (queue, heap, domain and store
# points) and the topic tests (topic points).
function(hakobu_kill_points out)
  file(GLOB_RECURSE _sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/*.cpp ${PROJECT_SOURCE_DIR}/src/*.hpp)
  set(_points "")
  foreach(_source IN LISTS _sources)
    file(STRINGS ${_source} _lines REGEX "kill_point\\(\"[^\"]+\"\\)")
    foreach(_line IN LISTS _lines)
      string(REGEX MATCHALL "kill_point\\(\"[^\"]+\"\\)" _calls "${_line}")
      foreach(_call IN LISTS _calls)
        string(REGEX REPLACE "kill_point\\(\"([^\"]+)\"\\)" "\\1" _point "${_call}")
        list(APPEND _points ${_point})
      endforeach()
    endforeach()
  endforeach()
  list(REMOVE_DUPLICATES _points)
  list(SORT _points)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_sources})
  set(${out} "${_points}" PARENT_SCOPE)
endfunction()
